"""The command line: ``python -m confpipe``, the Hydra app around the engine.

main        the Hydra app: user errors as one line, exit codes
launch      one launch: prepare (compile), then run_and_record (run, report, record)
sweep       the Hydra launcher that runs a ``-m`` sweep as one DAG
plan        the plan as shown: a table, or a mermaid or dot diagram
progress    the live display and the plain lines
results     a sweep's results table, CSV and JSON
manifest    what a launch planned and how each step ended, under the prefix

May import every layer below it: ``confpipe.config``, ``confpipe.engine``,
``confpipe.backends``, ``confpipe.storage``, ``confpipe.errors``, ``confpipe.cancel``.
"""
