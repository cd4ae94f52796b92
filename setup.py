from setuptools import find_packages, setup

setup(
    name="mlproject",
    version="0.2.0",
    description="A small, fast, trustworthy skeleton for PyTorch projects: sacred + TensorBoard.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["mlproject", "mlproject.*"]),
    python_requires=">=3.10",
    install_requires=[
        # torch/torchvision are not pinned: a user's pip picks the current matching pair.
        "torch>=2.1",
        "torchvision>=0.16",
        "sacred>=0.8.4",
        # 2.6.5: RecordWriter.flush fsyncs, which the TensorBoard sink's flush relies on.
        "tensorboardX>=2.6.5",
        # tensorboardX checksums every event record with it when installed; its pure-Python
        # fallback makes each scalar ~4x dearer (14 µs instead of 3.5 here).
        "crc32c",
        "numpy",
        "tqdm",
        # sacred 0.8.7 (latest release) imports pkg_resources, which setuptools>=81 no longer
        # ships: without this pin a fresh venv fails with "No module named 'pkg_resources'".
        # Drop it once sacred releases a fix.
        "setuptools<81",
    ],
    extras_require={
        # tensorboard provides the real event-file reader the tests check our files with;
        # matplotlib the test of SummaryWriter.add_figure; sqlalchemy + psycopg2-binary and
        # pymongo + mongomock let the tests run sacred's SqlObserver on SQLite and PostgreSQL,
        # and its MongoObserver without a server.
        "dev": [
            "pytest",
            "pytest-xdist",
            "ruff",
            "tensorboard",
            "matplotlib",
            "sqlalchemy",
            "psycopg2-binary",
            "pymongo",
            "mongomock",
        ],
        "examples": ["scikit-learn"],
        # the recipes of examples/sweeps and their tests: SLURM job arrays through submitit
        # (tested with its local executor) and Optuna studies in a database (SQLite,
        # PostgreSQL through the dev extra's psycopg2-binary).
        "sweeps": ["submitit", "optuna"],
        "bench": ["lightning"],
    },
)
