"""CLI: ``edge-derm demo`` (the whole pipeline on the embedded synthetic dataset)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def _pct(v: object) -> str:
    return f"{100 * v:.1f} %" if isinstance(v, (int, float)) else "–"


def demo(
    out: Path = typer.Option(Path("edge-derm-demo"), "--out", "-o", help="Demo folder to write."),
    quick: bool = typer.Option(False, "--quick", help="The small demo (90 s budget on a 2-core CPU; converts fp32 and int8 only)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", "-b", help="Backbone (default mobilenet_v2)."),
    weights: str = typer.Option("auto", "--weights",
                                help="auto (ImageNet when cached or downloadable, else from scratch), "
                                     "imagenet, none, or a weights file."),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Model input size in pixels (96; --quick 64)."),
    force: bool = typer.Option(False, "--force", help="Replace --out if it is a previous demo folder."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of images, split, weights and sampling."),
    per_class: Optional[int] = typer.Option(None, "--per-class", hidden=True, help="Synthetic images per class."),
    epochs_per_block: Optional[int] = typer.Option(None, "--epochs-per-block", hidden=True, help="Epochs per step."),
    steps_per_epoch: Optional[int] = typer.Option(None, "--steps-per-epoch", hidden=True, help="Batches per epoch."),
    max_drop: Optional[List[str]] = typer.Option(None, "--max-drop", hidden=True,
                                                 help="Gate METRIC=POINTS (repeat); default macro_f1=2, sensitivity:MM=5."),
) -> None:
    """Synthesise data, train, convert (fp32/fp16/dynamic/int8; --quick: fp32/int8), benchmark and report, in one folder."""
    from edge_derm import progress
    from edge_derm.demo import DEFAULT_GATES, DemoConfig, run_demo
    from edge_derm.errors import ConfigError

    try:
        config = DemoConfig(out=out, quick=quick, backbone=backbone, weights=weights, image_size=image_size,
                            per_class=per_class, epochs_per_block=epochs_per_block,
                            steps_per_epoch=steps_per_epoch, gates=list(max_drop or DEFAULT_GATES), seed=seed,
                            force=force)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None

    def on_stage(i: int, n: int, name: str, title: str) -> None:
        if progress.enabled():
            typer.echo(f"[{i}/{n}] {title}", err=True)

    s = run_demo(config, on_stage=on_stage)
    _print_summary(s)


def _print_summary(s: dict) -> None:
    out = Path(s["out"])
    t, w, m = s["training"], s["weights"], s["metrics"]
    timings = ", ".join(f"{x['name']} {x['seconds']:.0f} s" for x in s["stages"])
    typer.echo(f"edge-derm demo: done in {s['seconds']:.0f} s ({timings})")
    d = s["dataset"]
    typer.echo(f"data: {d['images']} synthetic images, {len(d['classes'])} classes, "
               f"train {d['splits']['train']} / test {d['splits']['test']}")
    alpha = f" alpha {t['alpha']}" if t.get("alpha") is not None else ""
    if t.get("unfreeze") == "full":
        typer.echo(f"model: {t['backbone']}{alpha} at {t['image_size']} px, every layer trained from epoch 1 "
                   f"(unfreeze full), {t.get('epochs')} epochs, lr {t['lr_backbone']:g}")
    else:
        typer.echo(f"model: {t['backbone']}{alpha} at {t['image_size']} px, steps {' -> '.join(t['steps'])}, "
                   f"{t['epochs_per_block']} epochs each")
    typer.echo(f"weights: {w['note']}")
    k = m["keras"]
    typer.echo(f"test (Keras): accuracy {_pct(k.get('accuracy'))}, macro F1 {_pct(k.get('macro_f1'))} "
               f"(chance {_pct(m['chance_accuracy'])}, n={k.get('n')})")
    for q, v in m["variants"].items():
        lat = ", ".join(f"{ms:.2f} ms @{th} thr" for th, ms in v["latency_ms"].items() if isinstance(ms, (int, float)))
        typer.echo(f"  {q:8s} {v['size_mb'] or 0:6.2f} MB  accuracy {_pct(v['accuracy'])}  "
                   f"macro F1 {_pct(v['macro_f1'])}  {lat or v['status']}")
    g = s["gates"]
    if g["passed"]:
        typer.echo(f"gates ({', '.join(g['rules'])}): passed")
    else:
        typer.echo(f"gates ({', '.join(g['rules'])}): {len(g['failures'])} failed (reported, not fatal):")
        for f in g["failures"]:
            typer.echo(f"  - {f}")
    for warning in s["conversion"]["warnings"]:
        typer.echo(f"conversion warning: {warning}")
    typer.echo(f"report: {out / s['report']['html']}")
    typer.echo(f"summary: {out / 'summary.json'}")


def register(app: typer.Typer) -> None:
    """Add ``demo`` to the root app."""
    app.command("demo")(demo)
