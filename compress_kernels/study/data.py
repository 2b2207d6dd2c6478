"""Datasets that need no download: scikit-learn's bundled digits (the embedded default) and
CIFAR-10 read from its standard python-pickle files in a local folder."""

from __future__ import annotations

import os
import pickle

import numpy as np
import torch
import torch.nn.functional as F


def _normalize(x_train: torch.Tensor, x_test: torch.Tensor):
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    return (x_train - mean) / std, (x_test - mean) / std


def load_digits(size: int = 32, seed: int = 0, test_fraction: float = 0.25, channels: int = 3):
    """scikit-learn's 1797 8x8 digit images, upsampled (bilinear) to size x size, repeated to
    `channels`, normalized with the training mean / std, split per class (stratified, seeded).
    Returns (x_train, y_train, x_test, y_test): float [N, channels, size, size], int64 labels."""
    from sklearn.datasets import load_digits as sk_load_digits

    digits = sk_load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.repeat(1, channels, 1, 1)
    y = torch.tensor(digits.target, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(digits.target == c)
        rng.shuffle(idx)
        test_idx.extend(idx[: int(round(len(idx) * test_fraction))].tolist())
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    test_mask[test_idx] = True
    x_train, x_test = _normalize(x[~test_mask], x[test_mask])
    return x_train, y[~test_mask], x_test, y[test_mask]


CIFAR10_TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
CIFAR10_TEST_FILE = "test_batch"


def load_cifar10(data_dir: str, limit: int | None = None):
    """CIFAR-10 from the standard python-pickle files (``data_batch_1..5``, ``test_batch``) in
    `data_dir` or its ``cifar-10-batches-py`` subfolder. Returns (x_train, y_train, x_test, y_test)
    normalized like load_digits. `limit` keeps the first N images of each split."""
    folder = data_dir
    if not os.path.exists(os.path.join(folder, CIFAR10_TEST_FILE)):
        folder = os.path.join(data_dir, "cifar-10-batches-py")
    missing = [f for f in CIFAR10_TRAIN_FILES + [CIFAR10_TEST_FILE] if not os.path.exists(os.path.join(folder, f))]
    if missing:
        raise FileNotFoundError(f"CIFAR-10 files not found in {data_dir!r}: missing {missing}. Nothing is "
                                "downloaded; put the python version of CIFAR-10 there.")

    def read(names):
        xs, ys = [], []
        for name in names:
            with open(os.path.join(folder, name), "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        x = torch.from_numpy(np.concatenate(xs)).float() / 255.0
        y = torch.from_numpy(np.concatenate(ys))
        return (x[:limit], y[:limit]) if limit else (x, y)

    x_train, y_train = read(CIFAR10_TRAIN_FILES)
    x_test, y_test = read([CIFAR10_TEST_FILE])
    x_train, x_test = _normalize(x_train, x_test)
    return x_train, y_train, x_test, y_test
