"""``syslrn plan``: show the probes, filters and counters a model needs."""

from __future__ import annotations

import argparse
import json
import logging

from syslrn.collect.privileges import missing_capabilities
from syslrn.collect.trigger import TRIGGER_TCP, Trigger, parse_trigger
from syslrn.errors import BpfError, ModelError
from syslrn.model.file import Model, load_model, require_kept_features, save_model
from syslrn.monitor.plan import COMM_MAX, MAX_NODE_TYPES, MonitorPlan, make_plan

log = logging.getLogger(__name__)

#: Embeddings whose kept features the monitor can count in the kernel. A
#: model trained on a feature table qualifies when its columns are
#: bag-of-nodes features, which make_plan checks by name.
MONITORED_EMBEDDINGS = ("bag-of-nodes", "feature-table")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="show the eBPF programs a model needs and their sizes",
        description=(
            "Derive from a model's kept features the eBPF programs, node type "
            "filters and counters that syslrn monitor loads, and print them. With "
            "CAP_BPF and CAP_PERFMON, also load the programs to count their "
            "instructions. The model must keep bag-of-nodes features only, of at "
            f"most {MAX_NODE_TYPES} node types that differ in their first "
            f"{COMM_MAX} bytes."
        ),
    )
    parser.add_argument(
        "model", metavar="MODEL", help="model file (JSON) written by syslrn train"
    )
    parser.add_argument(
        "--trigger",
        default=None,
        metavar="tcp:PORT|unix:PATH",
        help="trigger to size the programs for (default: the model's, else tcp:1)",
    )
    parser.add_argument(
        "--no-sizes",
        action="store_true",
        help="do not load the programs to measure them",
    )
    parser.add_argument(
        "--save", action="store_true", help="store the plan in the model file"
    )
    parser.add_argument("--json", action="store_true", help="print JSON for programs")
    parser.set_defaults(func=run)


def load_planned_model(path: str) -> tuple[Model, MonitorPlan]:
    """Load a model file and compute its monitor plan.

    Raises
    ------
    ModelError
        The file is invalid, names an embedding that the monitor cannot
        count, keeps no feature, or keeps features that the kernel cannot
        count or tell apart. The message names the file.
    """
    model = load_model(path)
    name = model.embedding["name"]
    if name not in MONITORED_EMBEDDINGS:
        raise ModelError(
            f"{path}: embedding {name!r} cannot be monitored, because the kernel "
            "counts only bag-of-nodes features; correct the name in the file or "
            "train the model again with --embedding bag-of-nodes"
        )
    require_kept_features(model, path)
    try:
        plan = make_plan(model.to_dict())
    except ModelError as exc:
        raise ModelError(f"{path}: {exc}") from None
    return model, plan


def run(args: argparse.Namespace) -> int:
    model, plan = load_planned_model(args.model)
    document = plan.to_dict()

    trigger_text = args.trigger or model.training.get("trigger")
    trigger = (
        parse_trigger(trigger_text) if trigger_text else Trigger(TRIGGER_TCP, port=1)
    )
    sizes = recorder = None
    if not args.no_sizes:
        missing = missing_capabilities()
        if missing:
            log.warning(
                "missing capability %s: measuring program sizes needs loading the "
                "programs, so sizes are skipped; run syslrn plan as root with these "
                "capabilities or grant cap_bpf,cap_perfmon, or pass --no-sizes to "
                "plan without sizes",
                " and ".join(missing),
            )
        else:
            from syslrn.monitor.sizes import planned_sizes, recorder_sizes

            try:
                sizes = planned_sizes(plan, trigger)
                recorder = recorder_sizes()
            except BpfError as exc:
                log.warning("could not load the programs to size them: %s", exc)
    document["instructions"] = sizes
    document["recorder_instructions"] = recorder

    if args.save:
        model.plan = document
        save_model(model, args.model)
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        print(format_plan(document))
    return 0


def format_plan(document: dict) -> str:
    lines = ["node types filtered in the kernel:"]
    for node_type in document["node_types"]:
        comm = (
            ""
            if node_type["comm"] == node_type["name"]
            else f" (as {node_type['comm']!r})"
        )
        lines.append(
            f"  {node_type['index']:>3}  {node_type['name']}{comm}: "
            f"{', '.join(node_type['stats'])}"
        )
    sizes = document.get("instructions") or {}
    lines.append(
        f"programs ({len(document['programs'])}, attached at "
        f"{document['probes']} probes):"
    )
    for name in document["programs"]:
        size = f"{sizes[name]:>5} insns" if name in sizes else ""
        caller = document.get("tail_called_by", {}).get(name)
        hooks = (
            f"tail call from {caller}" if caller else ", ".join(document["hooks"][name])
        )
        lines.append(f"  {name:<18} {size:<11} {hooks}")
    if sizes:
        mean = sum(sizes.values()) / len(sizes)
        lines.append(f"  mean {mean:.0f} instructions per program")
    recorder = document.get("recorder_instructions") or {}
    if recorder:
        total = sum(recorder.values())
        lines.append(
            f"full recorder: {len(recorder)} programs, {total} instructions, "
            f"mean {total / len(recorder):.0f}"
        )
    lines.append("counters: " + "; ".join(document["counters"]))
    build = "degrees too" if document["track_degree"] else "counts only"
    lines.append(f"program build: {build}")
    for warning in document.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)
