"""(l) Training steps/s of the default model on CPU with TensorFlow's oneDNN custom operations on (the default) and
off (TF_ENABLE_ONEDNN_OPTS=0, which also drops the "oneDNN custom operations are on" banner line), each in a fresh
process, alternating, best of 2. This is why segprep keeps oneDNN on and hides TensorFlow's import banner by
pointing stderr elsewhere while TensorFlow imports (trainer/lazy.py) instead.
"""

import json
import os
import subprocess
import sys
import tempfile

from benchmarks.bench_distribute import STEP_RATE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CODE = STEP_RATE + """
import json, sys
from trainer.lazy import import_tensorflow
import_tensorflow()
from trainer import distribute

print(json.dumps(steps_per_second(sys.argv[1], distribute.make("one_device"))))
"""


def main():
    best = {}
    with tempfile.TemporaryDirectory() as tmp:
        records = os.path.join(tmp, "records")
        env = dict(os.environ, PYTHONPATH=REPO)
        subprocess.run([sys.executable, "-m", "pipelines.prepare", "--output_dir", records, "--runner=DirectRunner"],
                       check=True, cwd=REPO, capture_output=True, env=env)
        for _ in range(2):
            for name, value in (("oneDNN on (default)", None), ("TF_ENABLE_ONEDNN_OPTS=0", "0")):
                run_env = dict(env)
                run_env.pop("TF_ENABLE_ONEDNN_OPTS", None)
                if value is not None:
                    run_env["TF_ENABLE_ONEDNN_OPTS"] = value
                proc = subprocess.run([sys.executable, "-c", CODE, records], env=run_env, capture_output=True,
                                      text=True, cwd=REPO)
                if proc.returncode:
                    sys.exit(proc.stderr[-3000:])
                rate = json.loads(proc.stdout.strip().splitlines()[-1])
                best[name] = max(rate, best.get(name, 0.0))
    on, off = best.values()
    print(f"(l) training steps/s, default model, batch 8, one CPU device, best of 2: oneDNN on {on:.2f}, "
          f"TF_ENABLE_ONEDNN_OPTS=0 {off:.2f} → off is {off / on:.2f}× on")


if __name__ == "__main__":
    main()
