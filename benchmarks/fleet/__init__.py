"""Fleet benchmark of the control plane: one real portunus-server, many clients.

    python -m benchmarks.fleet [--scenarios pushes,real,sim] [--out results/fleet] [--run NAME]
    make fleet

Scenarios (each against a fresh server data dir under /tmp):

* pushes: one real portunus-client; 1,000 rules pushed one after another
  (POST /v1/rules, waiting for the client's ack), then the rule count raised
  to 10,000 while the client is away and 100 more pushes on top;
* real:   N real portunus-client processes (default 100): enroll, connect,
  one push each, then server outages (3 s and 60 s) and the time until each
  client has resynced after the server is back; control connections counted;
* sim:    simulated clients, many per process (real TLS gRPC control streams,
  the real ControlClient, a data plane that only records rules): enroll,
  connect, one push each under concurrency, outages; N = 1,000 and more.

Modules: plane (the server process and its API), realclients, sim (worker
processes and the orchestrator's side), scenarios, stats (pure), report
(plots and markdown from the saved JSON), procstat (/proc readers).
"""
