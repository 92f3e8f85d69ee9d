"""``edge-derm demo``: the whole product on the embedded synthetic dataset, in minutes on a CPU.

One call runs every stage and leaves one folder::

    <out>/data/        synthetic images (the folder layout) + synth.json
    <out>/dataset/     manifest.csv + dataset.json (grouped, stratified 80:20 split)
    <out>/run/         training run (model.keras, config.json, history, metrics): block-wise from
                       ImageNet weights, every layer from epoch 1 when trained from scratch
    <out>/convert/     model.{fp32,fp16,dynamic,int8}.tflite (--quick: fp32, int8) + labels.txt + model.json
    <out>/benchmark/   results.csv / results.json / plots (this CPU, per class, gates)
    <out>/report.html, report.md, report_assets/
    <out>/summary.json stages, timings, the weights decision and note, headline metrics, gate status

The demo only drives the stages: each stage is the library call its CLI command makes, the weights
come from :func:`edge_derm.models.pretrained.choose_weights`, and the demo writes nothing into another
stage's folder (its notes go to its own ``summary.json``, an ``artefacts.DemoSummary``).

The folder is built in place (stages record absolute paths of each other, so it cannot be built
elsewhere and renamed), and removed again if any stage fails, so a failed demo leaves neither a
half-written folder nor a half-written report; with ``force`` the previous demo folder is restored
on failure and deleted only on success. Failing quantisation gates are reported in the summary, they
do not fail the demo. Wall times and accuracies of both sizes: benchmarks/results/demo-*.json
(``python benchmarks/scripts/measure_demo.py``).

Modules: :mod:`.config` (options, sizes, schedule) and :mod:`.run` (the stages and the summary, it
imports config); neither imports this ``__init__``.
"""

from __future__ import annotations

from edge_derm.demo.config import (
    CHANCE,
    DEFAULT_GATES,
    DEMO_MODES,
    DEMO_SIZES,
    QUICK_MODES,
    STAGES,
    DemoConfig,
    DemoSize,
    Schedule,
    schedule_for,
)
from edge_derm.demo.run import StageCallback, run_demo

__all__ = ["CHANCE", "DEFAULT_GATES", "DEMO_MODES", "DEMO_SIZES", "QUICK_MODES", "STAGES", "DemoConfig", "DemoSize",
           "Schedule", "StageCallback", "run_demo", "schedule_for"]
