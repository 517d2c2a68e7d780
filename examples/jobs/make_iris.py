#!/usr/bin/env python3
"""Writes examples/jobs/iris.csv: an iris-style table of 150 flowers (50 of
each of 3 species; four measurements in cm drawn from Gaussians with the
per-species means and standard deviations of Fisher's iris data), rows
shuffled so that a validation split (the last rows) holds every species.
It is synthetic, not Fisher's data; the model and job are the same.

    python3 examples/jobs/make_iris.py examples/jobs/iris.csv
    fluxion dataset upload iris examples/jobs/iris.csv --label species \\
        --features x=sepal_length,sepal_width,petal_length,petal_width
    fluxion model create examples/models/mlp.json
    fluxion train submit examples/jobs/mlp-iris.json --watch

Only the standard library and numpy; the same seed gives the same file.
"""
import argparse
import sys

import numpy as np

COLUMNS = ("sepal_length", "sepal_width", "petal_length", "petal_width")
# setosa, versicolor, virginica
MEANS = np.array([[5.006, 3.428, 1.462, 0.246],
                  [5.936, 2.770, 4.260, 1.326],
                  [6.588, 2.974, 5.552, 2.026]])
STDS = np.array([[0.352, 0.379, 0.174, 0.105],
                 [0.516, 0.314, 0.470, 0.198],
                 [0.636, 0.322, 0.552, 0.275]])


def iris(per_class=50, seed=0):
    """x: float [N, 4] (one decimal, as measured), species: int [N]."""
    rng = np.random.default_rng(seed)
    species = np.repeat(np.arange(3), per_class)
    x = np.round(np.clip(MEANS[species] + STDS[species] * rng.standard_normal((len(species), 4)),
                         0.1, None), 1)
    order = rng.permutation(len(species))
    return x[order], species[order]


def csv_text(x, species):
    lines = [",".join(COLUMNS + ("species",))]
    lines += ["%.1f,%.1f,%.1f,%.1f,%d" % (tuple(r) + (s,)) for r, s in zip(x, species)]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    text = csv_text(*iris(a.per_class, a.seed))
    if a.out == "-":
        sys.stdout.write(text)
    else:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
