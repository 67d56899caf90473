// The dive of an OCI container (ferret): the last program before the
// container's process, as runc's init is.
//
// ferret's init (sh) mounts the container's file tree with the host's tools,
// then execs this perl program, still on the host's root. perl (Essential in
// Debian) is loaded before pivot_root and so goes on running after it: it
// swaps the roots, and then, with nothing of the host left, does what the
// process's confinement asks (capabilities, ids, no_new_privs, the seccomp
// filter) through perl's syscall(), which reaches the kernel directly, as
// Node cannot. Node is not used here: it would cost a whole Node start.
//
// It reads a plan: one step a line, its fields separated by tabs, done in
// order. Files the plan names are opened while the host's paths still
// exist: the seccomp filter, the environment (NUL-separated), the ready
// file (where "ready" or "error: ..." tells ferret create how it went) and
// the exec fifo (ferret start writes a byte there). The command is the
// rest of perl's arguments.
//
//   pivot ROOT             pivot_root into ROOT, detach the old root
//   chroot ROOT            chroot into ROOT (a container in the host's mount namespace)
//   join PID CGROUPS       (ferret exec) enter PID's namespaces; first, its cgroups (comma-separated dirs)
//   fork PIDFILE detach|wait  (ferret exec) the rest runs in a child: its PID to PIDFILE; the parent leaves or waits
//   propagation FLAGS      mount(2) propagation flags for the new / (after pivot_root, which refuses a shared root)
//   rlimit N SOFT HARD     prlimit64 (N is the resource's number)
//   keyring                a new session keyring
//   seccomp FILE           load the filter (with no_new_privs, or while privileged)
//   bounding N,N,...       drop these capabilities from the bounding set
//   groups G,G,...         setgroups
//   ids UID GID            setresgid, setresuid (keeping capabilities across it)
//   caps E P I             capset, three masks of capability numbers (N,N,...)
//   ambient N,N,...        raise these ambient capabilities
//   umask OCTAL            umask
//   cwd DIR                chdir
//   nnp                    no_new_privs
//   env FILE               the command's environment
//   ready FILE             say "ready" there
//   wait FIFO              wait for a byte from ferret start
// Syscall numbers are x86_64's (ferret refuses other arches).

export const DIVE_PERL = `# ferret's dive (lib/confine/dive.ts): PLAN, then the command.
use strict;
my ($plan, @argv) = @ARGV;
my ($ready, $wait, $filter, $pidfile, @env, @join);
$SIG{__DIE__} = sub { print $ready "error: @_" if $ready; print STDERR "ferret: @_"; exit 127 };
open(my $p, '<', $plan) or die "plan $plan: $!\\n";
my @steps = map { chomp; [split /\\t/, $_, -1] } <$p>;
close $p;
sub slurp { my $f = shift; open(my $h, '<', $f) or die "$f: $!\\n"; binmode $h; local $/; my $b = <$h>; close $h; $b }
for my $s (@steps) {
  my ($op, @a) = @$s;
  if ($op eq 'ready') { open($ready, '>', $a[0]) or die "$a[0]: $!\\n"; $ready->autoflush(1) }
  elsif ($op eq 'wait') { open($wait, '+<', $a[0]) or die "$a[0]: $!\\n" }
  elsif ($op eq 'seccomp') { $filter = slurp($a[0]) }
  elsif ($op eq 'env') { @env = grep { length } split /\\0/, slurp($a[0]) }
  elsif ($op eq 'join') {
    for my $ns (qw(cgroup ipc uts net pid mnt)) {
      open(my $h, '<', "/proc/$a[0]/ns/$ns") or die "the container's $ns namespace: $!\\n";
      push @join, $h;
    }
    for my $cg (grep { length } split /,/, $a[1]) {
      open(my $h, '>>', "$cg/cgroup.procs") or die "$cg: $!\\n"; print $h "$$\\n"; close $h or die "join $cg: $!\\n";
    }
  }
  elsif ($op eq 'fork' && length $a[0]) { open($pidfile, '>', $a[0]) or die "$a[0]: $!\\n" }
}
sub sys { my ($what, $r) = @_; $r >= 0 or die "$what: $!\\n"; $r }
sub caps { my $m = 0; $m |= 1 << $_ for grep { length } split /,/, shift; $m }
for my $s (@steps) {
  my ($op, @a) = @$s;
  if ($op eq 'join') {
    sys('setns', syscall(308, fileno($_), 0)) for @join;
  } elsif ($op eq 'fork') {
    # (a PID namespace takes children only; the parent says the child's PID, then leaves it or waits for it)
    defined(my $child = fork) or die "fork: $!\\n";
    if ($child) {
      if ($pidfile) { print $pidfile $child; close $pidfile }
      exit 0 if $a[1] eq 'detach';
      waitpid($child, 0);
      exit($? & 127 ? 128 + ($? & 127) : $? >> 8);
    }
  } elsif ($op eq 'chroot') {
    chroot $a[0] or die "chroot $a[0]: $!\n";
    chdir '/' or die "chdir /: $!\n";
  } elsif ($op eq 'pivot') {
    chdir $a[0] or die "chdir $a[0]: $!\\n";
    sys('pivot_root', syscall(155, my $d1 = '.', my $d2 = '.'));
    sys('umount the old root', syscall(166, my $d3 = '.', 2));
    chdir '/' or die "chdir /: $!\\n";
  } elsif ($op eq 'propagation') {
    sys('mount propagation of /', syscall(165, my $none = '', my $slash = '/', my $type = '', $a[0] + 0, 0));
  } elsif ($op eq 'rlimit') {
    my $limit = pack('QQ', $a[1], $a[2]);
    sys("setrlimit $a[0]", syscall(302, 0, $a[0] + 0, $limit, 0));
  } elsif ($op eq 'keyring') {
    sys('new session keyring', syscall(250, 1, 0));
  } elsif ($op eq 'seccomp') {
    my $prog = pack('Sx6P', length($filter) / 8, $filter);
    sys('seccomp filter', syscall(157, 22, 2, $prog));
  } elsif ($op eq 'bounding') {
    sys("drop capability $_", syscall(157, 24, $_ + 0, 0, 0, 0)) for grep { length } split /,/, $a[0];
  } elsif ($op eq 'groups') {
    my @g = grep { length } split /,/, $a[0];
    my $list = pack('L*', @g, 0);
    sys('setgroups', syscall(116, scalar(@g), $list));
  } elsif ($op eq 'ids') {
    sys('keep capabilities', syscall(157, 8, 1, 0, 0, 0));
    sys('setresgid', syscall(119, $a[1] + 0, $a[1] + 0, $a[1] + 0));
    sys('setresuid', syscall(117, $a[0] + 0, $a[0] + 0, $a[0] + 0));
  } elsif ($op eq 'caps') {
    my ($e, $p, $i) = map { caps($_) } @a;
    my $lo = sub { $_[0] & 0xffffffff }; my $hi = sub { $_[0] >> 32 };
    my $head = pack('LL', 0x20080522, 0);   # (in variables: syscall() takes no constant for a pointer)
    my $data = pack('L6', $lo->($e), $lo->($p), $lo->($i), $hi->($e), $hi->($p), $hi->($i));
    sys('capset', syscall(126, $head, $data));
  } elsif ($op eq 'ambient') {
    sys("ambient capability $_", syscall(157, 47, 2, $_ + 0, 0, 0)) for grep { length } split /,/, $a[0];
  } elsif ($op eq 'umask') {
    umask oct($a[0]);
  } elsif ($op eq 'cwd') {
    chdir $a[0] or die "chdir $a[0]: $!\\n";
  } elsif ($op eq 'nnp') {
    sys('no_new_privs', syscall(157, 38, 1, 0, 0, 0));
  } elsif ($op eq 'ready') {
    print $ready "ready\\n"; close $ready; undef $ready;
  } elsif ($op eq 'wait') {
    sysread($wait, my $byte, 1) == 1 or die "waiting for start: $!\\n"; close $wait;
  }
}
%ENV = map { /^([^=]*)=(.*)$/s ? ($1, $2) : () } @env;
my $file = $argv[0];
if ($file !~ m{/}) {
  ($file) = grep { -f $_ && -x _ } map { "$_/$argv[0]" } split /:/, ($ENV{PATH} // '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin');
  defined $file or die "$argv[0]: executable file not found in \\$PATH\\n";
}
exec { $file } @argv;
die "exec $argv[0]: $!\\n";
`;

/** A step of the plan. */
export type DiveStep = [op: string, ...args: string[]];

/** The plan as the dive reads it. Fields may hold no tab or newline (ferret refuses such paths). */
export function planText(steps: readonly DiveStep[]): string {
  for (const s of steps) {
    if (s.some((f) => /[\t\n]/.test(f))) throw new Error(`a tab or newline in the plan: ${s.join(" ")}`);
  }
  return steps.map((s) => `${s.join("\t")}\n`).join("");
}
