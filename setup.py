"""The extension finprobe._core: python/ext/*.c over the library's c/src/*.c,
compiled together (no libfinprobe.so to find at run time). Metadata is in
pyproject.toml. Debian packages needed: libmnl-dev libnftables-dev libpcap-dev
python3-dev python3-setuptools."""

import os
from glob import glob

from setuptools import Extension, setup

# Relative paths: setuptools wants them relative to this file's directory.
os.chdir(os.path.dirname(os.path.abspath(__file__)))

core = Extension(
    "finprobe._core",
    sources=sorted(glob("python/ext/*.c")) + sorted(glob("c/src/*.c")),
    depends=sorted(glob("python/ext/*.h") + glob("c/src/*.h") + glob("c/include/*.h")),
    include_dirs=["c/include", "c/src", "python/ext"],
    libraries=["mnl", "nftables", "pcap"],
    extra_compile_args=["-std=c11", "-D_GNU_SOURCE", "-fvisibility=hidden",
                        "-Wno-unused-parameter", "-Wno-cast-function-type"],
)

setup(
    ext_modules=[core],
    options={
        # The Makefile owns build/obj, build/tests ...: setuptools keeps to a
        # directory of its own. Compile the ~15 C files in parallel.
        "build": {"build_base": "build/setuptools"},
        "build_ext": {"parallel": os.cpu_count() or 1},
    },
)
