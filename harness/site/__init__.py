"""Where the processes of a measurement run, and how they are reached (no knowledge of experiments).

    topology/   loopback | netns (namespaces, veth pairs, link shaping) | hosts; made and removed per run
    executor/   how a role's processes, commands, files and listeners are reached: local, netns, ssh
    procs       child processes: own session, stopped by pid, CPU time of a process tree
    netutil     free ports, listeners seen through /proc, loopback addresses
"""
