"""Streaming sources with Ray Data against the in-memory path, and the memory it takes.

throughput: the Fashion-MNIST MLP (784-256-128-10, batch 64, AdamW, one thread) trained by
  `trainers.loop.train_trial` on the IDX files loaded in memory, and on the same training images
  written as --format: parquet (one fixed-size list column of 784 uint8 pixels, row groups of
  4,096 rows), csv (files of 10,000 rows, a header, 784 pixel columns and the label) or images
  (a PNG per image, a folder per class; read as 1x28x28) streamed by Ray Data as a 1-worker trial reads it (`trial_dataset`: whole blocks, read ahead by
  a thread from the moment the trial opens it). Rounds alternate the two paths in one process, a
  trial of --epochs epochs each (10, search_spaces/fashion_mnist.yaml's); the figure is a trial's
  training rows per second of training time (the wait for data included for the streamed one),
  and the ratio streamed / in-memory per round, with its first epoch's alone. Target: >= 0.7x.
memory: writes a parquet data set of about --gigabytes of random rows (784 float64 features, a
  label; uncompressed files of 100,000 rows), runs `accelsweep run` on it with two 1-worker trials
  at once (1 epoch each), and samples the memory of every process of the sweep (the CLI, Ray's own
  processes, the trials, Ray Data's workers) every second with psutil; prints the peak of their
  summed PSS (shared pages split among the processes mapping them) and of their summed RSS (shared
  pages counted in each), and each process's PSS at that peak. Target: < 5 GB for 5 GB of data.

Run: python benchmarks/streaming.py throughput [--format parquet] [--rows 20000] [--rounds 3] [--epochs 10]
     python benchmarks/streaming.py memory --gigabytes 1.9 --workdir /tmp/streaming-bench
"""

import argparse
import dataclasses
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from contextlib import nullcontext

import numpy as np

FASHION = "/usr/share/datasets/fashion-mnist"
SPEC = """\
name: streaming-memory
data: {{source: parquet, path: {path}, label_column: label}}
model: {{kind: mlp, hidden: [256, 128]}}
train: {{epochs: 1, batch_size: 256, seed: 0}}
space: {{dropout: {{grid: [0.0, 0.1]}}}}
search: {{algorithm: grid, num_samples: 1, metric: val_accuracy, mode: max}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, max_concurrent_trials: 2}}
deploy: {{runtimes: [onnxruntime], rounds: 3}}
"""


def write_fashion(workdir, rows, file_format):
    """Fashion-MNIST's first `rows` training images written as `file_format` under workdir;
    returns the in-memory data set and the spec's `data` section for the files."""
    import pyarrow as pa

    from trainers.data import load_dataset

    data = load_dataset("idx", FASHION)
    rows = min(rows, len(data.y_train))  # the training split: 54,000 of the 60,000 files' images
    x = data.x_train[:rows].numpy().astype(np.uint8).reshape(rows, 784)
    y = data.y_train[:rows].numpy()
    path = os.path.join(workdir, f"fashion-{file_format}-{rows}")
    if file_format == "parquet":
        import pyarrow.parquet as pq

        path += ".parquet"
        pixels = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 784)
        pq.write_table(pa.table({"pixels": pixels, "label": y}), path, row_group_size=4096)
    elif file_format == "csv" and not os.path.isdir(path):
        import pyarrow.csv as pacsv

        os.makedirs(path)
        for start in range(0, rows, 10_000):
            columns = {f"p{i}": x[start : start + 10_000, i] for i in range(784)} | {"label": y[start : start + 10_000]}
            pacsv.write_csv(pa.table(columns), os.path.join(path, f"part-{start // 10_000:02d}.csv"))
    elif file_format == "images" and not os.path.isdir(path):
        from PIL import Image

        for index, (image, label) in enumerate(zip(x, y)):
            os.makedirs(os.path.join(path, f"class{label}"), exist_ok=True)
            Image.fromarray(image.reshape(28, 28), "L").save(os.path.join(path, f"class{label}", f"{index:05d}.png"))
    return data, {"source": file_format, "path": path}


def throughput(args):
    import ray

    from orchestrator.config.preflight import inspect_source
    from orchestrator.sweep.streaming import open_streamed, trial_dataset
    from trainers.loop import TrialRecipe, train_trial

    os.makedirs(args.workdir, exist_ok=True)
    in_memory, data = write_fashion(args.workdir, args.rows, args.format)
    in_memory = dataclasses.replace(in_memory, x_train=in_memory.x_train[: args.rows], y_train=in_memory.y_train[: args.rows])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    streamed = open_streamed(inspect_source(data, seed=0), data["path"])
    recipe = TrialRecipe(model_kind="mlp", hidden=(256, 128), epochs=args.epochs, batch_size=64, runtime="eager")
    figures = {"in-memory": [], "streamed": []}
    first_epochs = {"in-memory": [], "streamed": []}
    for round_index in range(args.rounds):
        for name in ("in-memory", "streamed")[:: 1 if round_index % 2 == 0 else -1]:
            epochs = []
            with trial_dataset(streamed, seed=0, epochs=range(recipe.epochs)) if name == "streamed" else nullcontext(in_memory) as data:
                final = train_trial(recipe, data, lambda metrics, checkpoint: epochs.append(metrics))
            rows_per_epoch = final["train_samples_per_s"] * final["epoch_seconds"]
            figures[name].append(final["epochs_trained"] * rows_per_epoch / final["train_seconds"])
            first_epochs[name].append((epochs or [final])[0]["train_samples_per_s"])
        ratio = figures["streamed"][-1] / figures["in-memory"][-1]
        first = first_epochs["streamed"][-1] / first_epochs["in-memory"][-1]
        print(f"round {round_index + 1}: in-memory {figures['in-memory'][-1]:,.0f} samples/s, "
              f"streamed {figures['streamed'][-1]:,.0f} samples/s, ratio {ratio:.2f}x (first epoch alone {first:.2f}x)", flush=True)  # fmt: skip
    ratios = [s / m for s, m in zip(figures["streamed"], figures["in-memory"])]
    print(f"median ratio streamed / in-memory over {recipe.epochs}-epoch trials: {statistics.median(ratios):.2f}x (target >= 0.7x)")


def memory(args):
    import ray  # noqa: F401  (puts the psutil Ray vendors, ray/thirdparty_files, on the path)

    import psutil
    import pyarrow as pa
    import pyarrow.parquet as pq

    os.makedirs(args.workdir, exist_ok=True)
    directory = os.path.join(args.workdir, "rows")
    os.makedirs(directory, exist_ok=True)
    rows_per_file = 100_000  # 784 float64 features: 628 MB a file
    files = max(1, round(args.gigabytes * 1e9 / (rows_per_file * 785 * 8)))
    rng = np.random.default_rng(0)
    for index in range(files):
        target = os.path.join(directory, f"part-{index:04d}.parquet")
        if not os.path.exists(target):
            y = rng.integers(0, 10, rows_per_file)
            x = (rng.random((rows_per_file, 784)) + y[:, None] * 0.01).reshape(-1)  # float64
            table = pa.table({"pixels": pa.FixedSizeListArray.from_arrays(pa.array(x), 784), "label": y})
            pq.write_table(table, target, row_group_size=16_384, compression="none")
    size = sum(os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory))
    print(f"data set: {files} files, {size / 1e9:.2f} GB on disk", flush=True)
    spec = os.path.join(args.workdir, "spec.yaml")
    with open(spec, "w") as file:
        file.write(SPEC.format(path=directory))
    env = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    started = time.time()
    sweep = subprocess.Popen([sys.executable, "-m", "orchestrator", "run", spec], cwd=args.workdir, env=env)
    peak, done = {"rss": 0, "pss": 0, "processes": 0}, threading.Event()

    def sample():
        # RSS counts a shared page (Ray's object store, shared libraries) in every process mapping
        # it; PSS splits it among them, so the sum of PSS is what the processes take together
        root = psutil.Process(sweep.pid)
        while not done.is_set():
            processes = [root, *root.children(recursive=True)]
            rss = pss = 0
            each = []
            for process in processes:
                try:
                    info = process.memory_full_info()
                    rss, pss = rss + info.rss, pss + info.pss
                    each.append((info.pss, " ".join(process.cmdline())[:90]))
                except psutil.Error:
                    pass
            if pss > peak["pss"]:
                peak["at_peak"] = sorted(each, reverse=True)
            peak["rss"], peak["pss"] = max(peak["rss"], rss), max(peak["pss"], pss)
            peak["processes"] = max(peak["processes"], len(processes))
            time.sleep(1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = sweep.wait()
    done.set()
    print(f"accelsweep run exited {code} after {time.time() - started:.0f} s; the sweep's processes "
          f"(up to {peak['processes']}) together peaked at {peak['pss'] / 1e9:.2f} GB PSS "
          f"({peak['rss'] / 1e9:.2f} GB summing RSS; target < 5 GB)")  # fmt: skip
    print("at the PSS peak:")
    for process_pss, command in peak.get("at_peak", []):
        print(f"  {process_pss / 1e6:7.0f} MB  {command}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["throughput", "memory"])
    parser.add_argument("--format", choices=["parquet", "csv", "images"], default="parquet", help="throughput: the streamed files")
    parser.add_argument("--rows", type=int, default=20_000, help="throughput: Fashion-MNIST training rows used")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10, help="throughput: epochs per trial (search_spaces/fashion_mnist.yaml's)")
    parser.add_argument("--gigabytes", type=float, default=5.0, help="memory: size of the parquet data set")
    parser.add_argument("--workdir", default="/tmp/streaming-bench")
    args = parser.parse_args()
    throughput(args) if args.what == "throughput" else memory(args)


if __name__ == "__main__":
    main()
