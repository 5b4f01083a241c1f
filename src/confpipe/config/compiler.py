"""compile_steps(cfg): the composed Hydra config becomes a list of StepSpecs, checked whole.

Everything a run would trip over later is found here, before anything runs, as one
ConfigError line naming the key (``steps.train.resources.memory``) and the fix: steps that
don't match the schema (``confpipe.config.stepconf``), references to unknown steps, cycles,
functions that don't import or don't take the config's keywords (``confpipe.config.functions``),
and resources the chosen backend can't serve. ``${step:NAME}`` is only allowed in a step's
``config``: an edge only means something where it passes the output path to the function.

``run_options(cfg)`` and ``backend_for(cfg)`` read the rest of the config: the run's
``RunOptions`` and the backend (built by ``confpipe.backends.registry``). Importing this
module registers the ``step`` resolver.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from confpipe.backends import BackendKind
from confpipe.backends.registry import make_backend
from confpipe.backends.resources import Resources
from confpipe.backends.settings import BackendConf, missing_setting
from confpipe.config.explain import config_error, listing, unknown_key
from confpipe.config.functions import Functions
from confpipe.config.refs import link, markers, refuse_refs, register_resolver, resolved, steps_data
from confpipe.config.schema import (
    RunConf,
    backend_schema,
    mandatory_fields,
    schema_fields,
)
from confpipe.config.stepconf import check_step, to_resources
from confpipe.engine.spec import StepSpec, check_name
from confpipe.errors import ConfigError, closest, did_you_mean
from confpipe.storage import local_path

if TYPE_CHECKING:
    from confpipe.backends import Backend
    from confpipe.engine.options import RunOptions

__all__ = ["backend_for", "compile_steps", "output_paths", "register_resolver", "run_options"]


def compile_steps(
    cfg: DictConfig | Mapping[str, Any],
    *,
    backend: Backend | None = None,
    check_resources: bool = True,
    functions: Functions | None = None,
) -> list[StepSpec]:
    """The config's ``steps`` as StepSpecs, dependencies first; ConfigError on any mistake.

    ``cfg`` is the composed Hydra config; a plain mapping (or an untyped DictConfig) works
    too: its steps get the same checks. Resources are checked against ``backend``
    (default: ``backend_for(cfg)``), unless ``check_resources`` is false. ``functions``:
    the step functions already looked up (a sweep's points share them).
    """
    # imported when used: the job wrapper pulls in cloudpickle, which a launch that fails to
    # compile (or a fully cached one, for the remote decorator's check) need not pay for
    from confpipe.engine.remote import step_resources

    raw = steps_data(cfg)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"steps: expected a mapping of step names to steps, got {raw!r:.60}")
    if check_resources and backend is None:
        backend = backend_for(cfg)
    steps: dict[str, dict[str, Any]] = {}
    edges: dict[str, list[str]] = {}
    for name, step in raw.items():
        steps[name] = _read_step(name, step, raw)
        edges[name] = _edges(name, steps[name], raw)
    order = _dependency_order(edges)
    functions = functions if functions is not None else Functions()
    specs: dict[str, StepSpec] = {}
    for name in order:
        fields = steps[name]
        fn, fn_path = functions.resolve(name, fields["fn"])
        config = fields.get("config") or {}
        functions.check_call(name, fn, fn_path, config)
        resources = to_resources(name, fields.get("resources"))
        effective = step_resources(resources, fn)
        if effective is not None and backend is not None:
            _check_backend(backend, name, effective, fn_path if resources is None else None)
        spec = StepSpec(
            name,
            fn,
            config=link(config, specs),
            resources=resources,
            version=fields.get("version"),
            output_path=fields.get("output_path"),
        )
        _ = spec.identity  # hash deps-first, so that a long chain never hashes recursively
        specs[name] = spec
    return [specs[name] for name in order]


def output_paths(cfg: DictConfig | Mapping[str, Any]) -> dict[str, str]:
    """Each step's output path (local paths absolute), by step name: what ``${step:NAME}``
    stands for when a config is shown (``--cfg job --resolve``). Resources are not checked."""
    specs = compile_steps(cfg, check_resources=False)
    prefix = local_path(str(_resolved(_run_conf(cfg), "prefix")))
    return {spec.name: local_path(spec.output_under(prefix)) for spec in specs}


def backend_for(cfg: DictConfig | Mapping[str, Any]) -> Backend:
    """The backend the ``backend`` group selects, built by ``confpipe.backends.registry``.

    Its settings are checked first: a mandatory one left at ``???`` (``backend.project``), a
    key a ``+key=...`` override slipped in, and a ``backend.kind`` that doesn't match the
    group's settings (``backend=gcp`` chooses the gcp backend; ``backend.kind=gcp`` can't).
    """
    cfg = _run_conf(cfg)
    schema: type = OmegaConf.get_type(cfg, "backend") or dict
    mandatory = [k for k in schema_fields(schema) if k in mandatory_fields(schema)]
    try:
        unset = [k for k in mandatory if OmegaConf.is_missing(cfg.backend, k)]
    except OmegaConfBaseException as err:
        raise config_error(err) from None
    if unset:
        raise ConfigError(missing_setting(schema, unset[0]))
    settings = _resolved(cfg, "backend")
    refuse_refs("backend", settings, "a run option")
    _check_keys("backend", settings, schema)
    kind, expected = settings.get("kind"), backend_schema(settings.get("kind"))
    if kind in {k.value for k in BackendKind} and schema not in (dict, expected):
        raise ConfigError(
            f"backend.kind: {kind!r} needs {expected.__name__} settings, not {schema.__name__}; "
            f"choose the backend with backend={kind} (the config group), not backend.kind={kind}"
        )
    return make_backend(kind, settings, prefix=_resolved(cfg, "prefix"))


def run_options(
    cfg: DictConfig | Mapping[str, Any], *, backend: Backend | None = None
) -> RunOptions:
    """The config's run options, checked (``backend`` default: ``backend_for(cfg)``)."""
    # imported when used, as step_resources above: the lock's heartbeat machinery loads only
    # for a config that compiled
    from confpipe.engine.lock import LockOptions
    from confpipe.engine.options import RunOptions

    cfg = _run_conf(cfg)
    keys = [str(k) for k in cfg if k != "hydra"]
    _check_keys("", dict.fromkeys(keys), RunConf)
    options = {k: _resolved(cfg, k) for k in keys if k not in ("steps", "backend")}
    for key, value in options.items():
        refuse_refs(key, value, "a run option")
    _check_keys("lock", options["lock"], OmegaConf.get_type(cfg, "lock") or dict)
    run_only = _run_only(options["run_only"])
    heartbeat, lease = options["lock"]["heartbeat_interval"], options["lock"]["lease_timeout"]
    return RunOptions(  # checks every value
        prefix=options["prefix"],
        dry_run=options["dry_run"],
        run_only=run_only,
        force_run_failed=options["force_run_failed"],
        max_concurrent=options["max_concurrent"],
        detach=options["detach"],
        lock_options=LockOptions(float(heartbeat), float(lease)),
        backend=backend if backend is not None else backend_for(cfg),
        log_level=str(options["log_level"]).upper(),
        rerun_on_code_change=options["rerun_on_code_change"],
    )


def _run_only(value: Any) -> tuple[str, ...] | None:
    """``run_only`` as one step name or glob (``run_only=train_*``, as Hydra gives a bare
    word), or a list of them; a step named by digits comes from Hydra as an int."""
    if value is None:
        return None
    items = [value] if isinstance(value, str | int) else value
    if isinstance(items, list) and all(
        isinstance(i, str | int) and not isinstance(i, bool) for i in items
    ):
        return tuple(str(i) for i in items)
    raise ConfigError(
        f"run_only: {value!r:.60} is not a step name, a shell glob or a list of them; "
        "e.g. run_only=[train_tokenizer,eval] or run_only=train_*"
    )


def _run_conf(cfg: DictConfig | Mapping[str, Any]) -> DictConfig:
    """The run options typed by RunConf: ``cfg`` itself when Hydra composed it with the schema,
    else its keys but ``steps`` merged into the schema (compile_steps checks the steps)."""
    if isinstance(cfg, DictConfig) and issubclass(OmegaConf.get_type(cfg) or dict, RunConf):
        return cfg
    try:
        if isinstance(cfg, DictConfig):
            options: Any = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "steps"])
        else:
            options = {k: v for k, v in cfg.items() if k != "steps"}
        merged = OmegaConf.merge(_schema_for(options), options)
    except OmegaConfBaseException as err:
        raise config_error(err) from None
    assert isinstance(merged, DictConfig)
    return merged


def _schema_for(options: Any) -> DictConfig:
    """RunConf with the ``backend`` node typed by the schema of the backend ``kind`` named."""
    base = OmegaConf.structured(RunConf)
    backend = options.get("backend") if isinstance(options, Mapping) else None
    schema = backend_schema(backend.get("kind") if isinstance(backend, Mapping) else None)
    if schema is not BackendConf:
        base.backend = OmegaConf.structured(schema)
    assert isinstance(base, DictConfig)
    return base


def _resolved(cfg: DictConfig, key: str) -> Any:
    """``cfg[key]`` as plain data with every interpolation resolved."""
    return resolved(lambda: cfg[key])


def _check_keys(where: str, value: Any, schema: type) -> None:
    """Keys a ``+key=...`` override slipped past the schema are refused here, with a hint."""
    valid = schema_fields(schema)
    if not valid or not isinstance(value, dict):
        return
    for key in value:
        if key not in valid:
            raise ConfigError(unknown_key(f"{where}.{key}" if where else str(key), valid))


def _read_step(name: str, step: Any, steps: dict[str, Any]) -> dict[str, Any]:
    """The step's fields, checked against the schema; ``${step:...}`` outside config refused."""
    try:
        check_name(name)
    except ConfigError as err:
        raise ConfigError(f"steps: {err}") from None
    if isinstance(step, dict):
        for field_name, value in step.items():
            if field_name != "config":
                refuse_refs(f"steps.{name}.{field_name}", value, f"{field_name}")
        if step.get("fn") is None:  # ``steps.trian.config.lr=...`` adds a step "trian"
            close = closest(name, [other for other in steps if other != name])
            if close is not None:
                raise ConfigError(
                    f"steps.{name}: a step without fn (did you mean step {close!r}? an override "
                    f"under a step name the config doesn't have adds that step); fix the name "
                    f"or set steps.{name}.fn"
                )
    return check_step(name, step)


def _edges(name: str, fields: dict[str, Any], steps: dict[str, Any]) -> list[str]:
    """The steps ``name`` refers to, first-seen order; unknown ones refused."""
    deps: dict[str, None] = {}
    for where, dep in markers(fields.get("config"), f"steps.{name}.config"):
        if dep not in steps:
            names = list(steps)
            raise ConfigError(
                f"{where}: refers to unknown step {dep!r}{did_you_mean(dep, names)}; "
                f"steps: {listing(names)}"
            )
        deps[dep] = None
    return list(deps)


def _dependency_order(edges: dict[str, list[str]]) -> list[str]:
    """Every step after the steps it refers to (declaration order otherwise); cycles refused."""
    state: dict[str, bool] = {}  # False: on the current path; True: placed
    order: list[str] = []
    for root in edges:
        if root in state:
            continue
        state[root] = False
        stack = [(root, iter(edges[root]))]
        while stack:
            node, deps = stack[-1]
            for dep in deps:
                seen = state.get(dep)
                if seen is None:
                    state[dep] = False
                    stack.append((dep, iter(edges[dep])))
                    break
                if seen is False:
                    path = [n for n, _ in stack]
                    cycle = [*path[path.index(dep) :], dep]
                    raise ConfigError(
                        f"steps form a cycle: {' -> '.join(cycle)}; remove one of these "
                        "${step:...} references"
                    )
            else:
                state[node] = True
                order.append(node)
                stack.pop()
    return order


def _check_backend(backend: Backend, step: str, resources: Resources, marked: str | None) -> None:
    try:
        backend.check(step, resources)
    except ConfigError as err:
        origin = f" (resources from @remote on {marked})" if marked else ""
        raise ConfigError(f"{err}{origin}") from None
