"""The config layer: a composed Hydra config made into checked ``StepSpec``s.

schema      the structured configs (run options, steps, resources) Hydra merges into
stepconf    a step's plain data checked against its schema: keys, types, units
refs        ``${step:NAME}``: the resolver, and references turned into edges
functions   ``fn`` dotted paths imported, their signatures checked against the config
compiler    the whole config compiled: steps, run options, the backend
explain     any config error as one line naming the key and the fix
compose     Hydra composes a launch's config once, not twice; a signal stops it
composecache  a launch's composed config kept by everything it was composed from
yamlload    YAML loaded with a bound on what its aliases expand to (no "billion laughs")
yamlcache   each config file parsed once per content, kept in the user's cache folder
diskcache   that cache folder: entries written atomically, pruned, a damaged one a miss
search      where configs are found

May import: ``confpipe.engine``, ``confpipe.backends``, ``confpipe.storage``,
``confpipe.errors``, ``confpipe.cancel`` (never ``confpipe.cli``).
"""
