#!/usr/bin/perl
# cpu-reaper.pl OUT command [arg...]: runs the command as a child subreaper (prctl
# PR_SET_CHILD_SUBREAPER), so that every process it leaves behind - PostgreSQL's postmaster after
# pg_ctl exits, the archiver's archive_command children, walvault's detached workers, pgBackRest's
# async processes - is re-parented here instead of to init, and is reaped here when it exits. Once
# the last descendant is gone, OUT gets "cpu_s=<user+system> user_s=<> sys_s=<>": the CPU time of
# every descendant that was reaped by its parent or by us (the kernel adds a child's own times and
# its reaped children's times to whoever reaps it). OUT.rc gets the command's exit code as soon as
# the command itself exits (pg_ctl start -w returns while the server keeps running).
# Perl, not Node or Python: perl-base is on every Debian, and it can issue the raw syscall.
use strict;
use warnings;

my $out = shift @ARGV or die "usage: cpu-reaper.pl OUT command...\n";
my %prctl = (x86_64 => 157, aarch64 => 167);
chomp(my $arch = `uname -m`);
my $nr = $prctl{$arch} or die "cpu-reaper: no prctl syscall number for $arch\n";
syscall($nr, 36, 1, 0, 0, 0) == 0 or die "cpu-reaper: prctl(PR_SET_CHILD_SUBREAPER): $!\n";

sub put { my ($f, $s) = @_; open(my $h, '>', "$f.tmp") or die "$f: $!\n"; print $h $s; close $h; rename "$f.tmp", $f; }

my $pid = fork() // die "cpu-reaper: fork: $!\n";
if (!$pid) { exec { $ARGV[0] } @ARGV or die "cpu-reaper: exec $ARGV[0]: $!\n"; }
while ((my $p = wait()) != -1) {
  put("$out.rc", ($? >> 8) . "\n") if $p == $pid;
}
my (undef, undef, $cu, $cs) = times();
put($out, sprintf("cpu_s=%.3f user_s=%.3f sys_s=%.3f\n", $cu + $cs, $cu, $cs));
