"""pip install --no-build-isolation .  (into a virtual environment made with --system-site-packages, so that
Debian's python3-torch is the torch it uses): builds the extension with CMake in $TESSERA_BUILD_DIR (default
build/) and installs the tessera package. Needs what scripts/install-deps.sh installs."""
import glob
import os
import re
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = os.path.dirname(os.path.abspath(__file__))
VERSION = re.search(r"project\(tessera VERSION ([0-9.]+)", open(os.path.join(ROOT, "CMakeLists.txt")).read()).group(1)


class BuildWithCMake(build_py):
    """The pure-Python files as usual, plus tessera/_core*.so built by CMake."""

    def run(self):
        build = os.path.abspath(os.environ.get("TESSERA_BUILD_DIR", os.path.join(ROOT, "build")))
        if not os.path.exists(os.path.join(build, "CMakeCache.txt")):
            subprocess.check_call(["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release"])
        subprocess.check_call(["cmake", "--build", build, "--target", "_core", "-j", str(os.cpu_count() or 1)])
        super().run()
        modules = glob.glob(os.path.join(build, "python", "tessera", "_core*.so"))
        if not modules:
            raise RuntimeError(f"no tessera/_core*.so in {build}/python after the build")
        shutil.copy(modules[0], os.path.join(self.build_lib, "tessera"))


class BinaryDistribution(Distribution):
    def has_ext_modules(self):  # a platform wheel: the package carries a compiled module
        return True


setup(
    name="tessera",
    version=VERSION,
    description="Classifiers on images far larger than memory (IPS, PatchGD) on LibTorch",
    packages=["tessera"],
    package_dir={"": "python"},
    package_data={"tessera": ["*.pyi", "py.typed"]},
    python_requires=">=3.9",
    cmdclass={"build_py": BuildWithCMake},
    distclass=BinaryDistribution,
)
