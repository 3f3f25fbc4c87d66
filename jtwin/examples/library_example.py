"""jtwin as a library: fit a DP synthesizer to the bundled Adult sample, look at
the privacy record, draw rows, save, load and draw again.

Run:  python -m jtwin.examples.library_example [--quick] [OUTPUT_DIR]

`--quick` trains for a few epochs only (a smoke test; the twin is poor).
"""
import math
import os
import sys
import tempfile

import jtwin


def main(argv):
  quick = "--quick" in argv
  rest = [a for a in argv if a != "--quick"]
  out_dir = rest[0] if rest else tempfile.mkdtemp(prefix="jtwin_example_")
  here = os.path.dirname(os.path.abspath(__file__))
  data = jtwin.read_csv(os.path.join(here, "adult.csv.gz"))
  if quick:
    data = data.iloc[:2000]

  # The model file declares every column's public domain, so nothing but the
  # DP posterior is learned from the data.
  synth = jtwin.Synthesizer(os.path.join(here, "adult_model.txt"), method="vi",
                            epsilon=1.0, num_components=10 if quick else 50,
                            num_epochs=2 if quick else 200,
                            sampling_ratio=0.05 if quick else 0.01)
  synth.fit(data)
  p = synth.privacy
  eps_up = math.ceil(p.epsilon * 1e4) / 1e4       # rounded up: a bound stays a bound
  print(f"certified ({eps_up}, {p.delta:.3g})-DP, {p.steps} DP-SGD steps, "
        f"noise multiplier {p.noise_multiplier:.3g}")
  print("taken from the data without noise:", synth.inferred_from_data or "nothing")

  twin = synth.sample(1000)          # a new random seed on every call
  print(twin.head())

  path = os.path.join(out_dir, "adult_twin.jtwin.npz")
  synth.save(path)                   # npz + JSON: no pickle, no data, no seed
  again = jtwin.load(path)           # everything needed to sample, without the data
  more = again.sample(500)
  print(f"saved to {path}; reloaded and drew {len(more)} more rows")


if __name__ == "__main__":
  main(sys.argv[1:])
