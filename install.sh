#!/bin/sh
# install.sh: MINCS's installer, as a thin wrapper over `make install`.
#   [PREFIX=DIR] ./install.sh [--uninstall|--minimum|--help]
set -e
cd "$(dirname "$0")"
PREFIX=${PREFIX:-/usr/local}
case "${1:-}" in
  -u|--uninstall) exec make uninstall PREFIX="$PREFIX" ;;
  --minimum) exec make install PREFIX="$PREFIX" MINIMUM=1 ;;
  -h|--help)
    echo "Install script for MINCS"
    echo "Usage: [PREFIX=DIR] $0 [-u|--uninstall|--minimum]"
    exit 0 ;;
  "") exec make install PREFIX="$PREFIX" ;;
  *) echo "$0: unknown option $1 (see $0 --help)" >&2; exit 2 ;;
esac
