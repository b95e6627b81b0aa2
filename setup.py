"""
Packaging for toystore.

Besides the ``toystore`` packages this installs the twistd plugin dropin
``twisted/plugins/toystore_plugins.py`` (``twisted.plugins`` is a namespace
that many distributions add files to, so it is listed as a package but has no
``__init__.py`` of ours).
"""

from setuptools import find_packages, setup

setup(
    name="toystore",
    version="0.1.0",
    description="A replicated online toy store on Twisted: caching, replication and fault tolerance.",
    long_description=open("README.rst", encoding="utf-8").read(),
    long_description_content_type="text/x-rst",
    license="MIT",
    python_requires=">=3.11",
    packages=find_packages(include=["toystore", "toystore.*"]) + ["twisted.plugins"],
    package_data={
        "toystore": ["cluster.toml"],
        "toystore.deploy": ["systemd/*.service"],
        "toystore.frontend": ["static/*"],
        "twisted.plugins": ["toystore_plugins.py"],
    },
    install_requires=[
        "Twisted >= 25.5, < 27",
        "treq >= 24.9",
        "prometheus_client >= 0.20",
        "tqdm >= 4.60",
    ],
    extras_require={
        "test": [
            "pytest >= 8",
            "pytest-twisted >= 1.14",
            "hypothesis >= 6.100",
            "schemathesis >= 4.32",
            "matplotlib >= 3.7",
            "pyroute2 >= 0.7",
            "selenium >= 4.20",
        ],
        "hosts": ["pyroute2 >= 0.7"],
    },
    entry_points={"console_scripts": ["toystore = toystore.cli:main"]},
    classifiers=[
        "Framework :: Twisted",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3.11",
    ],
)
