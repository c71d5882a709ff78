"""Installs AutoRisk-TF: the library, the Beam jobs and the export tools."""

from setuptools import find_packages, setup

REPORT = ["umap-learn==0.5.12", "matplotlib==3.11.2"]

setup(
    name="autorisk-tf",
    version="0.1.0",
    description=(
        "Self-supervised pre-training on user behaviour sequences "
        "(Keras 3 on TensorFlow, Apache Beam preprocessing)."
    ),
    python_requires=">=3.11,<3.12",
    packages=find_packages(include=["autorisk_tf", "autorisk_tf.*", "beam", "beam.*",
                                    "export", "export.*"]),
    package_data={"autorisk_tf": ["schemas/*.yaml", "configs/*.yaml"]},
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "tensorflow-text==2.21.1",
        # The tfrecord extra brings the CRC library that WriteToTFRecord needs; the dask
        # extra, Beam's DaskRunner (completed in beam/dask_runner.py) and its cluster.
        "apache-beam[tfrecord,dask]==2.77.0",
        "dask==2026.8.0",
        "distributed==2026.8.0",
        "numpy==2.4.6",
        "absl-py==2.5.1",
        "PyYAML==6.0.4",
        "pyarrow==25.0.1",
        # Export and serving: TF Serving's request protos (warm-up requests), the local
        # REST server (aiohttp) and its client (requests). Beam's TensorFlow model handler
        # imports tensorflow-hub, which needs tf-keras.
        "tensorflow-serving-api==2.21.0",
        "aiohttp==3.14.5",
        "requests==2.34.2",
        "tensorflow-hub==0.16.1",
        "tf-keras==2.21.0",
        # Downstream evaluation: logistic regression and AUC on the embeddings.
        "scikit-learn==1.9.1",
        # Similar-user search (autorisk_tf.search): exact, HNSW and IVF-PQ indexes.
        "faiss-cpu==1.15.1",
    ],
    extras_require={
        # The evaluation report's UMAP maps and figures (python -m autorisk_tf.report).
        "report": REPORT,
        # Tests: pytest-xdist to run them in two processes, the report's figures, Playwright
        # to open the page in Chromium (the browser itself is Debian's `chromium`; that test
        # skips without it), Hypothesis to fuzz the row parser.
        "dev": [
            "pytest==9.2.0",
            "pytest-xdist==3.8.0",
            "ruff==0.17.6",
            "playwright==1.65.2",
            "hypothesis==6.170.17",
        ] + REPORT,
    },
)
