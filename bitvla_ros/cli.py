"""The `bitvla` command: info, convert, train, distill, record, eval, compare, demo, dataset, import-bag, ask.

Each subcommand imports what it runs only when it runs, so `bitvla --help` stays quick. The flags
of train and distill are derived from their settings dataclasses (bitvla_ros/train/settings.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bitvla_ros.arguments import add_arguments, from_arguments
from bitvla_ros.train.settings import DistillConfig, TrainConfig


def _cmd_info(args) -> int:
    import torch

    from bitvla_ros.kernels import AUTO_ORDER, autotune, available_backends, backend_names, get_backend
    from bitvla_ros.kernels.registry import backend_reason
    from bitvla_ros.model.device import resolve_device
    from bitvla_ros.model.checkpoint import CheckpointError, checkpoint_format
    from bitvla_ros.model.config import BitVLAConfig, ConfigError, preset
    from bitvla_ros.model.inventory import format_inventory, inventory

    try:
        if args.model:
            config = BitVLAConfig.load(Path(args.model) / "config.json" if Path(args.model).is_dir() else args.model)
            source = f"model folder {args.model} ({checkpoint_format(args.model)} format)"
        else:
            config = preset(args.preset)
            source = f"preset {args.preset}"
    except (ConfigError, CheckpointError, FileNotFoundError) as e:
        print(f"bitvla info: {e}", file=sys.stderr)
        return 2
    v, t = config.vision, config.text
    print(f"BitVLA from {source}")
    print(f"  vision  {v.num_hidden_layers} layers x {v.hidden_size} (MLP {v.intermediate_size}), "
          f"{v.image_size}px / patch {v.patch_size} = {v.num_patches} tokens per image, "
          f"{'W1.58-A8' if v.quantized else 'full precision'}")
    print(f"  LLM     {t.num_hidden_layers} layers x {t.hidden_size} (FFN {t.intermediate_size}), "
          f"{t.num_attention_heads} heads / {t.num_key_value_heads} KV, vocab {t.vocab_size}, W1.58-A8")
    print(f"  actions {config.action_chunk} steps x {config.action_dim} dims from {config.num_images} images"
          f"{' + proprio(' + str(config.proprio_dim) + ')' if config.use_proprio else ''}")
    print()
    heads = args.heads or "float"
    if args.heads is None and args.model and Path(args.model).is_dir():
        heads = json.loads((Path(args.model) / "config.json").read_text()).get("bitvla_ros", {}).get("heads", "float")
    print(format_inventory(inventory(config, embedding=args.embedding, heads=heads)))
    print(f"(packed: ternary linears at 2 bits + an fp32 scale each, token embedding {args.embedding}, "
          f"heads {'int8 rows + scales' if heads == 'int8' else 'bf16'}, rest bf16)")
    print()
    try:
        device = resolve_device(args.device)
        chosen = get_backend(args.backend, device.device).name
        why = backend_reason(args.backend, device.device)
    except (ValueError, RuntimeError) as e:  # incl. DeviceError
        print(f"bitvla info: {e}", file=sys.stderr)
        return 2
    print(f"kernel backends: {', '.join(backend_names())}; available on {device.device.type}: "
          f"{', '.join(available_backends(device.device))}")
    print(f"device '{args.device}' -> {device.device} ({device.reason})")
    print(f"backend '{args.backend}' -> {chosen} ({why}; auto order: {' > '.join(AUTO_ORDER)}); "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"CUDA {'yes: ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no'}")
    tunings = autotune.cached()
    print(f"cpu autotune on this machine: kernels, attention, RMSNorm/GLU ({autotune.cache_path()}): "
          + ("\n  ".join([""] + [t.describe() + f" [{t.workload}]" for t in tunings]) if tunings else
             "not measured yet (the first `auto` load of a model on this CPU measures it)"))
    if args.model:
        stats = Path(args.model) / "dataset_statistics.json"
        keys = sorted(json.loads(stats.read_text())) if stats.is_file() else []
        print(f"unnorm keys: {keys or 'none (dataset_statistics.json missing)'}; "
              f"tokenizer: {'yes' if (Path(args.model) / 'tokenizer.json').is_file() else 'missing'}")
    return 0


def _cmd_convert(args) -> int:
    import torch

    from bitvla_ros.model.checkpoint import CheckpointError, convert

    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    start = time.perf_counter()
    try:
        model = convert(args.src, args.dst, embedding=args.embedding, dtype=dtype, heads=args.heads)
    except (CheckpointError, FileNotFoundError) as e:
        print(f"bitvla convert: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in Path(args.dst).iterdir() if f.is_file())
    print(f"wrote packed model to {args.dst}: {len(model.ternary_layers())} ternary linears, "
          f"{size / 1e6:.1f} MB on disk, {time.perf_counter() - start:.1f} s")
    return 0


def _run_settings(command: str, run, kind, args) -> int:
    """``run`` on the settings ``kind`` parsed from the flags; a user's error is one line, exit code 2."""
    try:
        run(from_arguments(kind, args))
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"bitvla {command}: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_train(args) -> int:
    from bitvla_ros.train.oft import train

    return _run_settings("train", train, TrainConfig, args)


def _cmd_distill(args) -> int:
    from bitvla_ros.train.distill import distill

    return _run_settings("distill", distill, DistillConfig, args)


def _ids(what: str, example: str):
    def parse(text: str) -> list[int]:
        try:
            values = [int(t) for t in text.split(",") if t.strip()]
        except ValueError:
            values = []
        if not values:
            raise argparse.ArgumentTypeError(f"{what} must be comma-separated integers like {example}, got {text!r}")
        return values
    return parse


_tasks = _ids("tasks", "1,4,9")
_seeds = _ids("env seeds", "1,2")


def _init_states(specs: list[str] | None) -> tuple[list[int] | None, dict[int, list[int]]]:
    """--init-states values: "RANGES" for every task, "TASK=RANGES" for one (bitvla_ros/sim/splits.py)."""
    from bitvla_ros.sim.splits import parse_ranges

    common, per_task = None, {}
    for spec in specs or []:
        task, sep, ranges = spec.rpartition("=")
        if not sep:
            common = parse_ranges(ranges)
        elif task.strip().isdigit():
            per_task[int(task)] = parse_ranges(ranges)
        else:
            raise ValueError(f"expected --init-states RANGES or TASK=RANGES (e.g. 0-34 or 9=0-20), got {spec!r}")
    return common, per_task


def _cmd_record(args) -> int:
    from bitvla_ros.ros.record import RecordConfig

    try:
        common, per_task = _init_states(args.init_states)
        cfg = RecordConfig(output=args.output, suite=args.suite, tasks=args.tasks, episodes=args.episodes,
                           init_start=args.init_start, init_states=common, task_init_states=per_task,
                           seeds=args.seeds, image_size=args.image_size, repeats=args.repeats,
                           dart_noise=args.dart_noise, dart_correlation=args.dart_correlation,
                           noise_seed=args.noise_seed, allow_eval_states=args.allow_eval_states,
                           layout=args.layout, video=not args.no_video)
    except ValueError as e:
        print(f"bitvla record: {e}", file=sys.stderr)
        return 2
    from bitvla_ros.ros.ros_env import isolate

    isolate(args.ros_domain_id)
    from bitvla_ros.ros.record import run_recording

    run_recording(cfg)
    return 0


def _eval_config(args, **overrides):
    from bitvla_ros.ros.evaluate import EvalConfig

    fields = dict(model=args.model, output=args.output, suite=args.suite, tasks=args.tasks, episodes=args.episodes,
                  init_start=args.init_start, seeds=args.seeds, split=args.split, backend=args.backend,
                  device=args.device,
                  image_size=args.image_size, unnorm_key=args.unnorm_key, max_steps=args.max_steps,
                  in_process=args.in_process, policy_threads=args.policy_threads, jobs=args.jobs)
    return EvalConfig(**{**fields, **overrides})


def execute_steps_for(model, given: int | None = None) -> int:
    """An explicit --execute-steps, else the model's runtime.json, else the whole chunk (8)."""
    from bitvla_ros.model.runtime import RuntimeSettings
    from bitvla_ros.ros.evaluate import EvalConfig

    return given or RuntimeSettings.load(model).execute_steps or EvalConfig.execute_steps


def _cmd_eval(args) -> int:
    from bitvla_ros.model.normalize import NormStatsError
    from bitvla_ros.ros.ros_env import isolate

    try:
        cfg = _eval_config(args, video=not args.no_video, protocol=args.protocol,
                           execute_steps=execute_steps_for(args.model, args.execute_steps))
        if not args.in_process:
            isolate(args.ros_domain_id)
        from bitvla_ros.ros.evaluate import run_evaluation

        run_evaluation(cfg)
    except (RuntimeError, TimeoutError, ValueError, NormStatsError, FileNotFoundError) as e:  # incl. CheckpointError
        print(f"bitvla eval: {e}", file=sys.stderr)
        return 2
    return 0


def _cmd_select(args) -> int:
    from dataclasses import asdict, replace

    from bitvla_ros.model.normalize import NormStatsError
    from bitvla_ros.ros.ros_env import isolate
    from bitvla_ros.sim import selection as sel
    from bitvla_ros.sim.evaluation import grouped_rate_chart
    from bitvla_ros.sim.splits import TEST_SEEDS, VALIDATION_SEEDS, describe, parse_ranges

    out = Path(args.output).expanduser()
    try:
        split = args.split or (None if args.init_start is not None or args.episodes is not None else "validation")
        cands = sel.candidates(args.model, args.execute_steps)
        configs = [_eval_config(args, model=c.model, output=str(out / "candidates" / c.label.replace("/", "_")),
                                split=split, seeds=args.seeds or list(VALIDATION_SEEDS), video=args.video,
                                execute_steps=c.execute_steps) for c in cands]
        sel.check_held_out(configs[0].init_states, configs[0].seeds, parse_ranges(args.test_states),
                           args.test_seeds or list(TEST_SEEDS))
        if not args.in_process:
            isolate(args.ros_domain_id)
        from bitvla_ros.ros.evaluate import run_evaluation

        print(f"bitvla select: {len(cands)} candidates on init states {describe(configs[0].init_states)}, "
              f"env seeds {configs[0].seeds}")
        runs = {}
        for c, cfg in zip(cands, configs):
            results = Path(cfg.output) / "results.json"
            if sel.reusable(results, asdict(cfg)):
                print(f"{c.label}: evaluated alike before, reusing {results}")
                runs[c.label] = json.loads(results.read_text())
            else:
                print(f"{c.label}: {c.model}, execute_steps {c.execute_steps}")
                runs[c.label] = run_evaluation(cfg)
    except (RuntimeError, TimeoutError, ValueError, NormStatsError, FileNotFoundError) as e:  # incl. CheckpointError
        print(f"bitvla select: {e}", file=sys.stderr)
        return 2
    chosen = sel.selection(cands, runs)
    (out / "selection.json").write_text(json.dumps(chosen, indent=2) + "\n")
    grouped_rate_chart(chosen["per_task"], out / "selection.png",
                       f"bitvla select: init states {describe(configs[0].init_states)}, "
                       f"seeds {', '.join(map(str, configs[0].seeds))}")
    print("\n" + sel.format_selection(chosen))
    c = chosen["chosen"]
    print(f"\nchosen: {c['model']} with execute_steps {c['execute_steps']} ({sel.RULE}); "
          f"{out / 'selection.json'}, {out / 'selection.png'}")
    if args.apply:
        from bitvla_ros.model.runtime import RuntimeSettings

        path = replace(RuntimeSettings.load(c["model"]), execute_steps=c["execute_steps"]).save(c["model"])
        print(f"execute_steps {c['execute_steps']} written to {path}: policy_node and bitvla demo run it so")
    return 0


def _cmd_compare(args) -> int:
    from bitvla_ros.sim.compare import compare, differing_settings, format_comparison, load_runs, write_comparison

    try:
        runs = load_runs(args.results)
        table = compare(runs)
    except (ValueError, FileNotFoundError) as e:
        print(f"bitvla compare: {e}", file=sys.stderr)
        return 2
    print(format_comparison(table))
    for key, values in differing_settings(runs).items():
        print(f"note: the runs differ in {key}: {values}")
    if args.output:
        table_file, chart = write_comparison(table, Path(args.output), args.title)
        print(f"table: {table_file}, chart: {chart}")
    return 0


def _cmd_demo(args) -> int:
    from bitvla_ros.paths import default_model
    from bitvla_ros.ros.ros_env import isolate

    model = Path(args.model) if args.model else default_model()
    card = model / "demo.json"
    if not (model / "config.json").is_file():
        print(f"bitvla demo: no model at {model}; train one (`bitvla train`) or pass --model", file=sys.stderr)
        return 2
    demo = json.loads(card.read_text()) if card.is_file() else {}
    isolate(args.ros_domain_id)
    from bitvla_ros.ros.evaluate import EvalConfig, run_evaluation

    tasks = args.tasks or demo.get("tasks", [1])
    print(f"bitvla demo: {model.name} on {demo.get('suite', 'libero_goal')} tasks {tasks}, {args.episodes} episode(s) "
          f"each, on held-out init states from {demo.get('eval_init_start', 40)}; output {args.output}")
    try:
        result = run_evaluation(EvalConfig(
            model=str(model), output=args.output, suite=demo.get("suite", "libero_goal"), tasks=tasks,
            episodes=args.episodes, init_start=demo.get("eval_init_start", 40) + args.offset,
            seeds=[demo.get("eval_seed", 1)], backend=args.backend, device=args.device,
            image_size=demo.get("sim_image_size", 128),
            execute_steps=execute_steps_for(model)))
    except (RuntimeError, TimeoutError) as e:
        print(f"bitvla demo: {e}", file=sys.stderr)
        return 2
    total = result["summary"]["all tasks"]
    print(f"\nbitvla demo: success {total['successes']}/{total['trials']}; policy chunk latency p50 "
          f"{result['policy_chunk_latency']['p50_ms']} ms; wall time {result['wall_s']:.0f} s; "
          f"videos and plot in {args.output}")
    return 0


def _cmd_ask(args) -> int:
    import cv2
    import torch

    from bitvla_ros.model.checkpoint import CheckpointError
    from bitvla_ros.model.generate import GenerationSettings
    from bitvla_ros.model.vqa import load_vqa
    from bitvla_ros.paths import default_model

    model_dir = Path(args.model) if args.model else default_model()
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings.validate()
        images = []
        for path in args.image:
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # None when missing or not an image
            if bgr is None:
                raise ValueError(f"cannot read image {path}: no such file, or not a PNG/JPEG/... image")
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        start = time.perf_counter()
        vqa = load_vqa(model_dir, backend=args.backend,
                       dtype={"auto": None, "bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype])
        load_s = time.perf_counter() - start
        with torch.inference_mode():
            answer = vqa.ask(images, args.question, settings,
                             on_text=lambda piece: print(piece, end="", flush=True))
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"bitvla ask: {e}", file=sys.stderr)
        return 2
    print()
    n = len(answer.token_ids)
    per = answer.per_token_s
    why = "stop token" if answer.stopped else f"limit of {settings.max_new_tokens} new tokens"
    print(f"[{model_dir.name}: {n} tokens ({why}); prompt {answer.prompt_tokens} tokens with {len(images)} image(s); "
          f"time to first token {answer.first_token_s * 1000:.0f} ms"
          + (f"; {per * 1000:.1f} ms/token ({1 / per:.1f} tokens/s) after it" if per else "")
          + f"; backend {vqa.model.backend_name}; load {load_s:.1f} s]", file=sys.stderr)
    return 0


def _cmd_dataset(args) -> int:
    from bitvla_ros.data import DatasetError, EpisodeDataset
    from bitvla_ros.data.tools import convert, describe

    try:
        if args.verb == "info":
            print(describe(EpisodeDataset(args.root)))
            return 0
        result = convert(args.src, args.dst, video=not args.no_video)
    except (DatasetError, FileExistsError, ValueError) as e:
        print(f"bitvla dataset {args.verb}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst} (LeRobot v3.0): {result['episodes']} episodes, {result['frames']} frames in "
          f"{result['seconds']:.1f} s")
    return 0


def _cmd_import_bag(args) -> int:
    from bitvla_ros.data import DatasetError
    from bitvla_ros.ros.bag_import import BagError, import_bags, read_params_file

    try:
        params = read_params_file(args.params_file) if args.params_file else {}
        overrides = {"dataset_dir": args.output, "image_topics": args.image_topics, "action_topic": args.action_topic,
                     "sample_mode": args.sample_mode, "record_rate_hz": args.rate, "episode_topic": args.episode_topic,
                     "proprio_names": args.proprio_names, "action_names": args.action_names}
        params.update({k: v for k, v in overrides.items() if v is not None})
        if args.no_video:
            params["video"] = False
        result = import_bags(args.bags, params, split=args.split, gap_s=args.gap_s, instruction=args.instruction,
                             instruction_topic=args.instruction_topic, joint_states_topic=args.joint_states_topic)
    except (BagError, DatasetError, ValueError, RuntimeError, OSError) as e:
        print(f"bitvla import-bag: {e}", file=sys.stderr)
        return 2
    skipped = ", ".join(f"{k} {v}" for k, v in result.skipped.items() if v) or "none"
    print(f"imported {len(result.episodes)} episodes, {result.frames} frames from {len(args.bags)} bag(s) into "
          f"{args.output} in {result.seconds:.1f} s ({result.frames / max(result.seconds, 1e-9):.0f} frames/s, "
          f"{result.messages} messages); discarded {result.discarded}; skipped: {skipped}")
    return 0 if result.episodes else 2


def _sim_arguments(p: argparse.ArgumentParser, init_start: int, seed: int, episodes: int) -> None:
    p.add_argument("--suite", default="libero_goal", help="LIBERO suite")
    p.add_argument("--tasks", type=_tasks, default=[1], help="comma-separated task ids of the suite, e.g. 1,4,9")
    p.add_argument("--episodes", type=int, default=episodes, help="episodes per task")
    p.add_argument("--init-start", type=int, default=init_start, help="first LIBERO init state (then consecutive)")
    p.add_argument("--seeds", type=_seeds, default=[seed], help="env seeds, e.g. 1,2: each runs every init state")
    p.add_argument("--seed", dest="seeds", type=_seeds, help="one env seed (same as --seeds N)")
    p.add_argument("--image-size", type=int, default=128, help="camera resolution of the sim")
    p.add_argument("--ros-domain-id", type=int, default=None, help="ROS domain (default: a random one)")


_DEVICE_HELP = "where the policy runs: auto (a CUDA GPU when there is one), cpu, cuda or cuda:N"


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    """Episodes and policy options shared by eval and select; unset ones take the protocol's defaults
    (bitvla_ros/ros/evaluate.py)."""
    _sim_arguments(p, init_start=40, seed=1, episodes=10)
    p.set_defaults(tasks=None, episodes=None, init_start=None, seeds=None, image_size=None)
    p.add_argument("--split", choices=["train", "validation", "val", "test"],
                   help="init states of a split (train 0-34, validation 35-39, test 40-49) instead of "
                        "--init-start/--episodes")
    p.add_argument("--in-process", action="store_true",
                   help="run the episodes in this process without ROS (LiberoEnv + the model directly)")
    p.add_argument("--backend", default="auto")
    p.add_argument("--device", default="auto", help=_DEVICE_HELP)
    p.add_argument("--unnorm-key", default="")
    p.add_argument("--max-steps", type=int, default=0, help="steps per episode (0 = the suite's limit)")
    p.add_argument("--policy-threads", type=int, default=1,
                   help="torch threads of the policy process (default 1: the sim renders on another core)")
    p.add_argument("--jobs", type=int, default=1,
                   help="worker processes the episodes are split over, each with its own sim and policy (over ROS "
                        "in a ROS domain of its own); one evaluation keeps about one core busy, so use up to the "
                        "number of cores")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bitvla", description="BitVLA for ROS 2: inspect, convert, run.")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="sizes per component, packed bytes, and the kernel backend choice")
    src = info.add_mutually_exclusive_group()
    src.add_argument("--preset", default="bitvla-3b", help="a built-in size (bitvla-3b, tiny)")
    src.add_argument("--model", help="a model folder (published master weights or packed)")
    info.add_argument("--backend", default="auto", help="kernel backend to resolve (default: auto)")
    info.add_argument("--device", default="auto", help=_DEVICE_HELP)
    info.add_argument("--embedding", default="int8", choices=["int8", "float"], help="embedding storage when packed")
    info.add_argument("--heads", default=None, choices=["float", "int8"],
                      help="projectors / action head storage when packed (default: the packed folder's, else float)")
    info.set_defaults(func=_cmd_info)

    conv = sub.add_parser("convert", help="published master weights -> packed deployment folder")
    conv.add_argument("src", help="published BitVLA folder (config.json, safetensors, .pt sidecars)")
    conv.add_argument("dst", help="output folder for the packed model")
    conv.add_argument("--embedding", default="int8", choices=["int8", "float"],
                      help="token embedding storage: int8 rows + scales (default) or float")
    conv.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                      help="dtype of the non-ternary tensors (default bfloat16)")
    conv.add_argument("--heads", default="float", choices=["float", "int8"],
                      help="projectors and action head: float in --dtype (default) or int8 rows + scales "
                           "(half the bytes; bench/int8_heads.py measures the effect on actions)")
    conv.set_defaults(func=_cmd_convert)

    tr = sub.add_parser("train", help="OFT fine-tuning (L1 on action chunks) on a recorded dataset",
                        description="Train BitVLA on a dataset written by recorder_node / `bitvla record`. "
                                    "Runs under torchrun for several GPUs or processes (DDP).")
    add_arguments(tr, TrainConfig)
    tr.set_defaults(func=_cmd_train)

    di = sub.add_parser("distill", help="make a VLA's vision encoder 1.58-bit by distillation-aware training",
                        description="Student = the encoder with W1.58-A8 linears, initialised from the full-precision "
                                    "teacher; loss = task L1 (with --dataset) + align weight x per-layer relative MSE.")
    add_arguments(di, DistillConfig)
    di.set_defaults(func=_cmd_distill)

    rec = sub.add_parser("record", help="scripted-expert demonstrations in LIBERO, recorded over ROS 2",
                         description="sim_node (expert) + recorder_node over DDS; failed episodes are discarded.")
    rec.add_argument("--output", required=True, help="dataset folder (appended to if it exists)")
    rec.add_argument("--layout", default="v3.0", choices=["v3.0", "v2.1"], help="dataset layout (LeRobot reads v3.0)")
    rec.add_argument("--no-video", action="store_true", help="v3.0: images inside the parquet files, not MP4")
    _sim_arguments(rec, init_start=0, seed=0, episodes=35)
    rec.set_defaults(episodes=None, init_start=None)  # neither given: the train split, init states 0-34
    rec.add_argument("--init-states", action="append", metavar="[TASK=]RANGES",
                     help="init states to record, e.g. 0-34 or 0-9,20-34 (every task) or 9=0-20 (task 9 only); "
                          "repeatable; default: the train split 0-34. Validation (35-39) and test (40-49) states "
                          "are refused")
    rec.add_argument("--allow-eval-states", action="store_true",
                     help="record on validation/test init states or test seeds anyway (no figure on them is "
                          "then held out)")
    rec.add_argument("--repeats", type=int, default=1, help="episodes per init state and seed (needs --dart-noise)")
    rec.add_argument("--dart-noise", type=float, default=0.0, metavar="SIGMA",
                     help="DART recovery demos: Gaussian noise of this std on the expert's executed arm actions "
                          "(env units: 1 = 5 cm / 0.5 rad per step; docs/default_model.md uses 0.1 and 0.2); "
                          "the clean action is recorded")
    rec.add_argument("--dart-correlation", type=float, default=0.0,
                     help="AR(1) coefficient of that noise between steps (0 = independent, as in DART)")
    rec.add_argument("--noise-seed", type=int, default=0, help="seed of the noise (repeat r uses seed + r)")
    rec.set_defaults(func=_cmd_record)

    ev = sub.add_parser("eval", help="evaluate a model in LIBERO through sim_node + policy_node (lockstep)",
                        description="Success per task with a 95%% interval, per env seed and pooled, latency, MP4s "
                                    "and a bar chart.")
    ev.add_argument("--model", required=True, help="model folder")
    ev.add_argument("--output", required=True, help="results folder")
    _eval_arguments(ev)
    ev.add_argument("--protocol", default="ros", choices=["ros", "libero"],
                    help="ros: held-out init states 40+, 128 px, 10 episodes of task 1 by default; libero: the "
                         "published BitVLA eval (all tasks, 50 trials from init state 0, 256 px, JPEG + Lanczos + "
                         "center crop, seeds 0/7, unnorm key = suite)")
    ev.add_argument("--no-video", action="store_true")
    ev.add_argument("--execute-steps", type=int, default=None,
                    help="actions of each chunk executed open loop before re-planning (default: the model's "
                         "runtime.json, else 8 as the published eval)")
    ev.set_defaults(func=_cmd_eval)

    se = sub.add_parser("select", help="choose checkpoint and execute_steps on validation init states",
                        description="Evaluates every --model x --execute-steps candidate with `bitvla eval` on the "
                                    "validation states (35-39) and seeds (0,3) and keeps the one with the most pooled "
                                    "successes (ties: the first listed). Refuses states or seeds that overlap the "
                                    "test ones. Candidates already evaluated alike in --output are reused.")
    se.add_argument("--model", required=True, action="append",
                    help="model folder or training checkpoint (runs/x/checkpoints/step_N); repeat for several")
    se.add_argument("--output", required=True, help="folder for selection.json, selection.png, candidates/")
    _eval_arguments(se)
    se.add_argument("--execute-steps", type=_ids("execute steps", "2,4,8"), default=[8],
                    help="comma-separated values to try, e.g. 2,4,8")
    se.add_argument("--test-states", default="40-49", help="init states reported on, never selected on")
    se.add_argument("--test-seeds", type=_seeds, default=None, help="env seeds reported on (default 1,2)")
    se.add_argument("--video", action="store_true", help="write an MP4 per episode (off: selection is for numbers)")
    se.add_argument("--apply", action="store_true",
                    help="write the chosen execute_steps into the chosen model folder's runtime.json")
    se.set_defaults(func=_cmd_select)

    cp = sub.add_parser("compare", help="several `bitvla eval` results side by side, each tested against the first",
                        description="Success per task for each run with 95%% Wilson intervals, and the two-sided "
                                    "Fisher exact p-value of each run against the first (the baseline).")
    cp.add_argument("results", nargs="+", help="eval output folders (or results.json), optionally LABEL=FOLDER")
    cp.add_argument("--output", help="folder for comparison.json and comparison.png")
    cp.add_argument("--title", default="bitvla eval: success per task")
    cp.set_defaults(func=_cmd_compare)

    ask = sub.add_parser("ask", help="answer a question about images with the model's VLM side (streamed)",
                         description="Zero-shot VQA: the vision encoder, projector and BitNet LLM generate an answer "
                                     "token by token (KV cache) in the published chat format. Works on packed "
                                     "folders, published VLA folders and released VLM folders (no action head).")
    ask.add_argument("--model", help="model folder (default: the shipped one in models/, whose answers mean nothing: "
                                     "it was trained for actions)")
    ask.add_argument("--image", action="append", default=[], help="image file; repeat for several (default: none)")
    ask.add_argument("--question", required=True)
    ask.add_argument("--max-new-tokens", type=int, default=64)
    ask.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    ask.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0 = off)")
    ask.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
    ask.add_argument("--seed", type=int, default=None, help="sampling seed")
    ask.add_argument("--backend", default="auto", help="kernel backend for the ternary linears")
    ask.add_argument("--dtype", default="auto", choices=["auto", "bfloat16", "float32"],
                     help="compute dtype of the non-ternary tensors (auto: as stored; bfloat16 for master weights)")
    ask.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ask.set_defaults(func=_cmd_ask)

    dm = sub.add_parser("demo", help="the shipped default model solving LIBERO tasks through ROS 2 (a few minutes)")
    dm.add_argument("--model", help="model folder (default: the shipped one in models/)")
    dm.add_argument("--output", default="out/demo", help="results, videos and plot")
    dm.add_argument("--tasks", type=_tasks, default=None, help="task ids (default: the model's tasks)")
    dm.add_argument("--episodes", type=int, default=1, help="episodes per task")
    dm.add_argument("--offset", type=int, default=0, help="start this many init states into the held-out ones")
    dm.add_argument("--backend", default="auto")
    dm.add_argument("--device", default="auto", help=_DEVICE_HELP)
    dm.add_argument("--ros-domain-id", type=int, default=None)
    dm.set_defaults(func=_cmd_demo)
    ds = sub.add_parser("dataset", help="inspect a dataset, or convert one to LeRobot v3.0")
    verbs = ds.add_subparsers(dest="verb", required=True)
    di = verbs.add_parser("info", help="episodes, frames, fps, features and tasks of a dataset (v3.0 or v2.1)")
    di.add_argument("root", help="dataset folder")
    dc = verbs.add_parser("convert", help="copy a dataset (v2.1 or v3.0) into a new LeRobot v3.0 dataset")
    dc.add_argument("src", help="dataset folder to read")
    dc.add_argument("dst", help="new folder for the v3.0 dataset")
    dc.add_argument("--no-video", action="store_true", help="images inside the parquet files, not MP4")
    ds.set_defaults(func=_cmd_dataset)

    ib = sub.add_parser("import-bag", help="rosbag2 recordings (MCAP or sqlite3) -> a dataset, paired as recorder_node",
                        description="Replays the bags into recorder_node's pairing (rate or action mode) and writes "
                                    "a dataset (LeRobot v3.0 by default). Settings: --params-file (as recorder_node "
                                    "takes, e.g. config/recorder.yaml), then the options here.")
    ib.add_argument("bags", nargs="+", help="bag folders (with metadata.yaml)")
    ib.add_argument("--output", required=True, help="dataset folder (appended to if it exists)")
    ib.add_argument("--params-file", help="recorder_node parameters (ROS params YAML)")
    ib.add_argument("--split", default="bag", choices=["bag", "gap", "topic"],
                    help="episodes: one per bag, cut at silences of the action topic, or by the episode topic")
    ib.add_argument("--gap-s", type=float, default=1.0, help="--split gap: silence that ends an episode (s)")
    ib.add_argument("--instruction", help="the task in words (default: the bag's instruction topic)")
    ib.add_argument("--instruction-topic", default="instruction", help="std_msgs/String topic of the instruction")
    ib.add_argument("--joint-states-topic", default="joint_states", help="sensor_msgs/JointState topic")
    ib.add_argument("--image-topics", nargs="+", help="camera topics ('/compressed' = CompressedImage)")
    ib.add_argument("--action-topic", help="the commands' topic")
    ib.add_argument("--episode-topic", help="--split topic: std_msgs/String start / stop / discard")
    ib.add_argument("--proprio-names", nargs="+", help="joints of joint_states stored as observation.state")
    ib.add_argument("--action-names", nargs="+", help="action dimensions in order")
    ib.add_argument("--sample-mode", choices=["rate", "action"], help="rate (a frame every 1/rate s) or action")
    ib.add_argument("--rate", type=float, help="frames per second in rate mode (the dataset fps)")
    ib.add_argument("--no-video", action="store_true", help="images inside the parquet files, not MP4")
    ib.set_defaults(func=_cmd_import_bag)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
