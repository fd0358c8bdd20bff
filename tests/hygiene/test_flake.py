"""flake.nix and flake.lock: they parse, pin the documented nixpkgs, and their shell logic does what it says.

nixpkgs itself cannot be fetched on the CPU machines, so the outputs are evaluated against a small
stand-in for nixpkgs that has only the attributes the flake uses (each exists in real nixpkgs); what is
checked is the flake's own logic: its app names, the nox sessions they run, and the shell hook's
LD_LIBRARY_PATH and Triton settings, run in bash.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess

import pytest
from support import ROOT

FLAKE = ROOT / "flake.nix"
LOCK = ROOT / "flake.lock"
# The nixos-25.05 pin recorded in shared/facts/VERIFIED.md (seen in two independent public flake.lock files).
NIXPKGS_REV = "ac62194c3917d5f474c1a844b6fd6da2db95077d"
NIXPKGS_NAR_HASH = "sha256-16KkgfdYqjaeRGBaYsNrhPRRENs0qzkQVUooNHtoy2w="
NIXPKGS_LAST_MODIFIED = 1767313136

STUB_NIXPKGS = r"""
{ system ? "x86_64-linux", ... }:
let
  pkg = name: { outPath = "/nix/store/stub-" + name; inherit name; };
in {
  lib = {
    makeLibraryPath = ps: builtins.concatStringsSep ":" (map (p: "${p}/lib") ps);
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    mapAttrs = builtins.mapAttrs;
  };
  python311 = pkg "python3-3.11" // { pkgs = { nox = pkg "nox"; }; };
  stdenv = { cc = { cc = { lib = pkg "gcc-lib"; }; }; };
  zlib = pkg "zlib"; zstd = pkg "zstd"; bzip2 = pkg "bzip2"; xz = pkg "xz";
  libffi = pkg "libffi"; openssl = pkg "openssl";
  git = pkg "git"; gcc = pkg "gcc"; gnumake = pkg "gnumake"; which = pkg "which";
  nixpkgs-fmt = pkg "nixpkgs-fmt";
  mkShell = args: args // { outPath = "/nix/store/stub-shell"; };
  writeShellApplication = args: args // { outPath = "/nix/store/stub-" + args.name; };
}
"""


def nix_instantiate() -> str:
    found = shutil.which("nix-instantiate")
    if not found:
        pytest.skip("nix-instantiate is not installed (Debian: apt-get install nix-bin)")
    return found


def nix_eval(expr: str) -> object:
    proc = subprocess.run([nix_instantiate(), "--eval", "--strict", "--json", "--expr", expr],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    stub = tmp_path_factory.mktemp("nixpkgs-stub")
    (stub / "default.nix").write_text(STUB_NIXPKGS)
    return nix_eval(
        f"""let out = (import {FLAKE}).outputs {{ self = {{}}; nixpkgs = {stub}; }};
                sys = "x86_64-linux"; in {{
          apps = out.apps.${{sys}};
          scripts = builtins.mapAttrs (n: p: {{ inherit (p) name text; }}) out.packages.${{sys}};
          shell = {{ inherit (out.devShells.${{sys}}.default) shellHook;
                     packages = map (p: p.name) out.devShells.${{sys}}.default.packages; }};
        }}"""
    )


def test_flake_parses():
    proc = subprocess.run([nix_instantiate(), "--parse", str(FLAKE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_lock_pins_the_documented_nixpkgs_revision():
    lock = json.loads(LOCK.read_text())
    assert lock["version"] == 7 and lock["root"] == "root"
    assert lock["nodes"]["root"]["inputs"] == {"nixpkgs": "nixpkgs"}
    locked = lock["nodes"]["nixpkgs"]["locked"]
    assert locked == {
        "lastModified": NIXPKGS_LAST_MODIFIED,
        "narHash": NIXPKGS_NAR_HASH,
        "owner": "NixOS",
        "repo": "nixpkgs",
        "rev": NIXPKGS_REV,
        "type": "github",
    }


def test_flake_input_is_the_branch_the_lock_was_taken_from():
    url = nix_eval(f"(import {FLAKE}).inputs.nixpkgs.url")
    original = json.loads(LOCK.read_text())["nodes"]["nixpkgs"]["original"]
    assert url == f"github:{original['owner']}/{original['repo']}/{original['ref']}"


def noxfile_sessions() -> set[str]:
    """Session names in noxfile.py: functions decorated with @nox.session (or its name= argument)."""
    names = set()
    for node in ast.parse((ROOT / "noxfile.py").read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            call = deco if isinstance(deco, ast.Call) else None
            target = call.func if call else deco
            if ast.unparse(target) == "nox.session":
                named = [k.value.value for k in (call.keywords if call else []) if k.arg == "name"]
                names.add(named[0] if named else node.name)
    return names


def test_apps_run_the_nox_sessions_of_the_same_name(outputs):
    assert set(outputs["apps"]) == {"smoke", "train", "tests"}
    for session, app in outputs["apps"].items():
        assert app["type"] == "app"
        assert app["program"] == f"/nix/store/stub-pipeline-{session}/bin/pipeline-{session}"
        assert outputs["scripts"][session]["text"].rstrip().endswith(f'exec nox -s {session} -- "$@"')
    missing = set(outputs["apps"]) - noxfile_sessions()
    assert not missing, f"flake apps run nox sessions that noxfile.py does not define: {missing}"


def test_dev_shell_has_python_311_nox_and_git(outputs):
    packages = outputs["shell"]["packages"]
    assert {"python3-3.11", "nox", "git", "gcc-lib", "zlib"} <= set(packages)


def shell_hook_env(hook: str, env: dict[str, str]) -> dict[str, str]:
    show = '\nprintf "%s\\n%s\\n" "$LD_LIBRARY_PATH" "${TRITON_LIBCUDA_PATH-unset}"'
    proc = subprocess.run(["bash", "-c", hook + show], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], **env})
    assert proc.returncode == 0, proc.stderr
    ld, triton = proc.stdout.splitlines()
    return {"LD_LIBRARY_PATH": ld, "TRITON_LIBCUDA_PATH": triton}


def test_shell_hook_puts_system_libs_and_the_nixos_driver_on_the_library_path(outputs):
    got = shell_hook_env(outputs["shell"]["shellHook"], {"LD_LIBRARY_PATH": "/already/there"})
    assert got["LD_LIBRARY_PATH"].split(":") == [
        "/nix/store/stub-gcc-lib/lib", "/nix/store/stub-zlib/lib", "/nix/store/stub-zstd/lib",
        "/nix/store/stub-bzip2/lib", "/nix/store/stub-xz/lib", "/nix/store/stub-libffi/lib",
        "/nix/store/stub-openssl/lib", "/run/opengl-driver/lib", "/already/there",
    ]


def test_shell_hook_takes_another_driver_folder_and_points_triton_at_it(outputs, tmp_path):
    hook = outputs["shell"]["shellHook"]
    assert shell_hook_env(hook, {"PIPELINE_DRIVER_LIB": str(tmp_path)})["TRITON_LIBCUDA_PATH"] == "unset"
    (tmp_path / "libcuda.so.1").touch()
    got = shell_hook_env(hook, {"PIPELINE_DRIVER_LIB": str(tmp_path)})
    assert got["TRITON_LIBCUDA_PATH"] == str(tmp_path)
    assert got["LD_LIBRARY_PATH"].split(":")[-1] == str(tmp_path)
