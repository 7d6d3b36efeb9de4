# SPDX-License-Identifier: Apache-2.0
# The product as installed: `cmake --install` lays out the daemons, their systemd units
# (checked by systemd-analyze verify), example configuration and state directory; CPack
# builds the Debian packages from the same build tree (no rebuild), and dpkg installs them
# into a throwaway root whose maintainer scripts create the service user there.
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

BUILD = os.environ.get("QF_BUILD_DIR", "")
VERSION = os.environ.get("QF_VERSION", "")


def run(*argv, **kwargs):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=kwargs.pop("timeout", 120), **kwargs)
    assert r.returncode == 0, f"{' '.join(argv)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def scratch():
    d = tempfile.mkdtemp(prefix="qf-packaging-test-")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_install_lays_out_daemons_units_configuration_and_state_directory(scratch):
    prefix = os.path.join(scratch, "prefix")
    for component in ("coordinator", "agent", "qfctl"):
        run("cmake", "--install", BUILD, "--prefix", prefix, "--component", component)
    for program in ("qf-coordinator", "qf-agent", "qfctl"):
        assert os.access(os.path.join(prefix, "bin", program), os.X_OK), program
    assert VERSION in run(os.path.join(prefix, "bin", "qf-agent"), "--version")
    for role in ("coordinator", "agent"):
        config = os.path.join(prefix, "etc", "quartzflow", f"{role}.yaml")
        assert mode(config) == 0o640, f"{config}: {mode(config):04o}"
        with open(config) as f:
            assert f"data_dir: {prefix}/var/lib/quartzflow/{role}" in f.read()
        unit = os.path.join(prefix, "lib", "systemd", "system", f"qf-{role}.service")
        with open(unit) as f:
            text = f.read()
        assert f"ExecStart={prefix}/bin/qf-{role} --config {prefix}/etc/quartzflow/{role}.yaml" in text
        for line in ("Type=notify", "User=quartzflow", "NoNewPrivileges=yes", "PrivateTmp=yes",
                     f"StateDirectory=quartzflow/{role}", "Restart=on-failure"):
            assert line in text.splitlines(), f"{unit}: no {line}"
    assert os.path.isdir(os.path.join(prefix, "var", "lib", "quartzflow"))
    units = os.path.join(prefix, "lib", "systemd", "system")
    coordinator_unit = open(os.path.join(units, "qf-coordinator.service")).read().splitlines()
    assert "ProtectSystem=strict" in coordinator_unit and "ProtectHome=yes" in coordinator_unit
    agent_unit = open(os.path.join(units, "qf-agent.service")).read().splitlines()
    assert "ProtectSystem=full" in agent_unit and "KillMode=mixed" in agent_unit
    # systemd's own checker: syntax, known settings, executables that exist.
    out = subprocess.run(["systemd-analyze", "verify", os.path.join(units, "qf-coordinator.service"),
                          os.path.join(units, "qf-agent.service")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "qf-" not in out.stderr, out.stderr  # no warning about our units
    # A second install keeps the configuration an operator edited.
    config = os.path.join(prefix, "etc", "quartzflow", "agent.yaml")
    with open(config, "a") as f:
        f.write("# edited\n")
    run("cmake", "--install", BUILD, "--prefix", prefix, "--component", "agent")
    assert open(config).read().endswith("# edited\n")
    assert os.path.exists(config + ".example")


def deb_contents(deb):
    return {line.split()[-1].lstrip("."): line.split()[0] for line in run("dpkg-deb", "-c", deb).splitlines()
            if not line.startswith("l")}


def test_debian_packages_install_into_a_throwaway_root_and_run(scratch):
    out = os.path.join(scratch, "debs")
    run("cpack", "-G", "DEB", "--config", os.path.join(BUILD, "CPackConfig.cmake"), "-B", out, cwd=BUILD,
        timeout=300)
    debs = {name.split("_")[0]: os.path.join(out, name) for name in os.listdir(out) if name.endswith(".deb")}
    assert sorted(debs) == ["quartzflow-agent", "quartzflow-coordinator", "quartzflow-dev", "quartzflow-qfctl"]

    agent = deb_contents(debs["quartzflow-agent"])
    assert agent["/usr/bin/qf-agent"].startswith("-rwxr-xr-x")
    assert "/lib/systemd/system/qf-agent.service" in agent
    assert agent["/etc/quartzflow/agent.yaml"] == "-rw-r-----"
    assert "/usr/bin/qf-coordinator" not in agent and "/usr/bin/qfctl" not in agent
    coordinator = deb_contents(debs["quartzflow-coordinator"])
    assert "/usr/bin/qf-coordinator" in coordinator and "/lib/systemd/system/qf-coordinator.service" in coordinator
    assert "/usr/bin/qfctl" in deb_contents(debs["quartzflow-qfctl"])
    dev = deb_contents(debs["quartzflow-dev"])
    assert "/usr/include/quartzflow/quartzflow.hpp" in dev
    assert any(p.endswith("/cmake/quartzflow/quartzflowConfig.cmake") for p in dev)
    assert not any(p.startswith("/usr/bin/") for p in dev)

    info = run("dpkg-deb", "-I", debs["quartzflow-agent"])
    assert "Package: quartzflow-agent" in info and f"Version: {VERSION}" in info
    depends = next(line for line in info.splitlines() if line.strip().startswith("Depends:"))
    assert "passwd" in depends and "libprotobuf" in depends  # the scripts' tools, the binary's libraries
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert f" {script}" in info, f"no {script} in the agent package"
    control = os.path.join(scratch, "control")
    run("dpkg-deb", "--control", debs["quartzflow-agent"], control)
    assert open(os.path.join(control, "conffiles")).read().split() == ["/etc/quartzflow/agent.yaml"]
    assert os.access(os.path.join(control, "postinst"), os.X_OK)
    run("sh", "-n", os.path.join(control, "postinst"))

    # A throwaway root: dpkg's database and the account files the maintainer scripts edit.
    root = os.path.join(scratch, "root")
    for d in ("etc", "var/lib/dpkg/info", "var/lib/dpkg/updates"):
        os.makedirs(os.path.join(root, d))
    for name, text in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n"),
                       ("etc/shadow", "root:*:19000:0:99999:7:::\n"), ("etc/gshadow", "root:*::\n"),
                       ("var/lib/dpkg/status", "")):
        with open(os.path.join(root, name), "w") as f:
            f.write(text)
    run("dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends", "--log=/dev/null",
        "--install", debs["quartzflow-agent"], debs["quartzflow-coordinator"], debs["quartzflow-qfctl"])
    users = [line.split(":") for line in open(os.path.join(root, "etc/passwd"))]
    service_user = next(u for u in users if u[0] == "quartzflow")
    uid, gid = int(service_user[2]), int(service_user[3])
    assert service_user[5] == "/var/lib/quartzflow" and service_user[6].strip() == "/usr/sbin/nologin"
    for path, owner, want in (("var/lib/quartzflow/agent", (uid, gid), 0o700),
                              ("var/lib/quartzflow/coordinator", (uid, gid), 0o700),
                              ("var/lib/quartzflow", (0, gid), 0o750),
                              ("etc/quartzflow/agent.yaml", (0, gid), 0o640),
                              ("etc/quartzflow/certs", (0, gid), 0o750),
                              ("var/log/quartzflow", (uid, gid), 0o750)):
        st = os.stat(os.path.join(root, path))
        assert (st.st_uid, st.st_gid) == owner and stat.S_IMODE(st.st_mode) == want, \
            f"{path}: {st.st_uid}:{st.st_gid} {stat.S_IMODE(st.st_mode):04o}"
    assert sum(1 for u in users if u[0] == "quartzflow") == 1  # two packages, one user
    assert VERSION in run(os.path.join(root, "usr/bin/qf-agent"), "--version")
    status = run("dpkg", f"--root={root}", "-s", "quartzflow-agent")
    assert "Status: install ok installed" in status
    # Removal keeps the data and the user (a store holds the run history).
    run("dpkg", f"--root={root}", "--force-script-chrootless", "--log=/dev/null", "--remove", "quartzflow-agent")
    assert not os.path.exists(os.path.join(root, "usr/bin/qf-agent"))
    assert os.path.isdir(os.path.join(root, "var/lib/quartzflow/agent"))
