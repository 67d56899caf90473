// The seccomp loader: the last host program before the container's command.
//
// Node cannot call prctl(2), and no program of Debian's loads a compiled
// seccomp filter and then execs in place (bubblewrap's --seccomp does, but it
// forks a monitor first, so the command would not be PID 1). perl can: its
// syscall() calls the kernel directly, and perl-base is Essential in Debian,
// so it is on every machine MINCS runs on, and it starts in about 3 ms
// (a Node start would cost the whole boot's time again).
//
// The loader, in order:
//   1. joins a new session keyring, so the container does not share the
//      host's (keyctl is blocked by the filter afterwards);
//   2. sets no_new_privs: no setuid program or file capability inside can
//      gain what the command has not got (the kernel also asks for it
//      before it lets a process without CAP_SYS_ADMIN load a filter);
//   3. loads the filter (the file, struct sock_filter[] as the kernel takes
//      it, lib/confine/seccomp.ts compiles it from an OCI profile);
//   4. execs the rest of its arguments, in place.
// Each failure is one line on stderr and exit status 125, as minc's own.

/** x86_64 numbers: keyctl, prctl; PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP; SECCOMP_MODE_FILTER; KEYCTL_JOIN_SESSION_KEYRING. */
const PERL = [
  "my$f=shift;open(F,'<',$f)||die\"seccomp filter $f: $!\\n\";binmode F;local$/;my$b=<F>;",
  'syscall(250,1,0)>=0||die"new session keyring: $!\\n";',
  'syscall(157,38,1,0,0,0)==0||die"no_new_privs: $!\\n";',
  "syscall(157,22,2,pack('Sx6P',length($b)/8,$b))==0||die\"seccomp filter: $!\\n\";",
  'exec{$ARGV[0]}@ARGV;die"$ARGV[0]: $!\\n"',
].join("");

/** The words that load FILTER and then exec the command given after them. */
export function loaderArgv(filter: string): string[] {
  return ["perl", "-e", `$SIG{__DIE__}=sub{print STDERR "minc: ",@_;exit 125};${PERL}`, filter];
}
