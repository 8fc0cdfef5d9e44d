#!/usr/bin/env python3
"""CPU seconds used so far, read from /proc (for the benchmarks that count a whole system).

  cpu.py pg POSTMASTER_PID   PostgreSQL: the postmaster, its reaped children and its live ones
  cpu.py pids PID...         the given live processes, every thread included
"""
import os
import sys


def fields(pid):
    s = open(f"/proc/{pid}/stat").read()
    return s.rsplit(")", 1)[1].split()


def pg(pm):
    t = sum(int(x) for x in fields(pm)[11:15])  # utime, stime, cutime, cstime
    for p in os.listdir("/proc"):
        if p.isdigit() and p != pm:
            try:
                f = fields(p)
            except OSError:
                continue
            if f[1] == pm:
                t += int(f[11]) + int(f[12])
    return t


def pids(ps):
    return sum(int(fields(p)[11]) + int(fields(p)[12]) for p in ps)


if __name__ == "__main__":
    ticks = pg(sys.argv[2]) if sys.argv[1] == "pg" else pids(sys.argv[2:])
    print(ticks / os.sysconf("SC_CLK_TCK"))
