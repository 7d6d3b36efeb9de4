# SPDX-License-Identifier: Apache-2.0
"""Builds quartzflow._native with the project's CMake (the top-level CMakeLists.txt, two
directories up) and puts it in the package: the C++ components are static libraries, so the
extension carries QuartzFlow inside it and the wheel needs only the system's shared
libraries (protobuf, fmt, spdlog, SQLite, date-tz) of the same platform.

Environment: QUARTZFLOW_CMAKE_BUILD_DIR reuses a configured build tree (e.g. ../../build)
instead of configuring one in setuptools' temporary directory; CMAKE_BUILD_PARALLEL_LEVEL
bounds the jobs (default 2); QUARTZFLOW_CMAKE_ARGS adds arguments to the configure step;
QUARTZFLOW_STRIP=0 keeps the debug information.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def library_version() -> str:
    text = (ROOT / "include" / "quartzflow" / "version.hpp").read_text()
    return re.search(r'#define QUARTZFLOW_VERSION_STRING "([^"]+)"', text).group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        build_dir = Path(os.environ.get("QUARTZFLOW_CMAKE_BUILD_DIR") or Path(self.build_temp).resolve() / "cmake")
        build_dir.mkdir(parents=True, exist_ok=True)
        if not (build_dir / "CMakeCache.txt").exists():
            configure = [
                "cmake", "-S", str(ROOT), "-B", str(build_dir),
                "-DCMAKE_BUILD_TYPE=Release",
                "-DQUARTZFLOW_PYTHON=ON",
                f"-DPYTHON_EXECUTABLE={sys.executable}",
                "-DQUARTZFLOW_BUILD_TESTS=OFF",
                "-DQUARTZFLOW_BUILD_EXAMPLES=OFF",
                "-DQUARTZFLOW_BUILD_TOOLS=OFF",
                "-DQUARTZFLOW_INSTALL=OFF",
                "-DQUARTZFLOW_BUILD_SHARED=OFF",
            ]
            if shutil.which("ninja"):
                configure += ["-G", "Ninja"]
            configure += shlex.split(os.environ.get("QUARTZFLOW_CMAKE_ARGS", ""))
            subprocess.run(configure, check=True)
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "2")
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "quartzflow_python", "-j", jobs], check=True)
        built = sorted((build_dir / "bindings" / "python" / "quartzflow").glob("_native*.so"))
        if not built:
            raise RuntimeError(f"the build left no _native*.so in {build_dir}/bindings/python/quartzflow")
        target = Path(self.get_ext_fullpath(ext.name))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built[-1], target)
        # A RelWithDebInfo tree (reused) makes a 50 MB module; the wheel needs no debug info.
        if shutil.which("strip") and os.environ.get("QUARTZFLOW_STRIP", "1") != "0":
            subprocess.run(["strip", "--strip-debug", str(target)], check=True)


setup(
    version=library_version(),
    ext_modules=[Extension("quartzflow._native", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
)
