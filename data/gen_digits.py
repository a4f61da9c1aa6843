"""Exports scikit-learn's copy of the UCI handwritten digits into data/digits.safetensors.

1797 grey-level 8x8 images (values 0..16) of the digits 0-9 written by 43 people, as scikit-learn ships them
(`sklearn.datasets.load_digits`, BSD-3-Clause; original data: Alpaydin & Kaynak, UCI Machine Learning
Repository, "Optical Recognition of Handwritten Digits", CC BY 4.0). Stored as u8 so the file stays ~116 KB;
`candle_tricks::data::digits` embeds it. Run from the repository root: python data/gen_digits.py
"""
import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits

d = load_digits()
images = d.images.astype(np.uint8)  # (1797, 8, 8), 0..16
labels = d.target.astype(np.uint8)  # (1797,)
assert images.max() == 16 and images.min() == 0 and images.shape == (1797, 8, 8)
save_file(
    {"images": torch.from_numpy(images).contiguous(), "labels": torch.from_numpy(labels).contiguous()},
    "data/digits.safetensors",
    metadata={"source": "sklearn.datasets.load_digits", "license": "BSD-3-Clause (scikit-learn); UCI CC BY 4.0"},
)
print("wrote data/digits.safetensors", images.shape, np.bincount(labels))
