"""One module per `portunus-bench` verb (asv's layout): NAME, add_parser(sub), run(args, argv) -> exit code.

harness/cli.py lists them (VERBS) and dispatches. Verbs are the only modules
that print or write report files; heavy imports happen inside run(), so
`portunus-bench paths` does not load matplotlib.
"""
