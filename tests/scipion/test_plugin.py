"""Plugin discovery, protocols.conf in the GUI tree, protocol forms and validation, engine launch."""
import configparser
import filecmp
import os
import re
import subprocess
import sys

import cryoflex_scipion

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cryoflex_protocols():
    from pwem import Domain
    return {name: cls for name, cls in Domain.getProtocols().items()
            if cls.__module__.startswith("cryoflex_scipion") and not cls.isBase()}


def test_entry_point_and_domain_discovery():
    from importlib.metadata import entry_points
    eps = entry_points(group="pyworkflow.plugin")
    assert any(ep.name == "cryoflex_scipion" and ep.value == "cryoflex_scipion" for ep in eps)
    from pwem import Domain
    assert "cryoflex_scipion" in Domain.getPlugins()
    plugin = cryoflex_scipion._pluginInstance
    assert plugin.getName() == "cryoflex_scipion"
    names = set(_cryoflex_protocols())
    assert {"ProtCryoFlexSimulateParticles", "ProtCryoFlexReconstruct"} <= names


def test_engine_import_does_not_import_scipion():
    code = ("import sys, cryoflex_scipion.engine.__main__, cryoflex_scipion.engine.core.reconstruction;"
            "print(any(m.split('.')[0] in ('pyworkflow', 'pwem') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_protocols_conf_in_package_and_gui_tree():
    package_conf = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "protocols.conf")
    assert filecmp.cmp(package_conf, os.path.join(REPO, "protocols.conf"), shallow=False)
    import pyworkflow as pw
    from pwem import Domain
    from pyworkflow.gui.project.viewprotocols_extra import ProtocolTreeConfig
    tree = ProtocolTreeConfig.load(Domain, pw.Config.SCIPION_PROTOCOLS)
    view = tree["Protocols SPA"]
    sections = [c for c in view.childs if c.text == "CryoFlex"]
    assert sections, "no CryoFlex section in the GUI protocol tree"

    def protocols(node):
        found = [node.value] if node.tag.startswith("protocol") and node.tag != "protocol_group" else []
        for child in node.childs:
            found += protocols(child)
        return found

    listed = protocols(sections[0])
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read(package_conf)
    in_file = re.findall(r'"value":\s*"(\w+)"', parser["PROTOCOLS"]["Protocols SPA"])
    assert in_file == listed
    # Each protocol once: a repeated entry makes the Scipion GUI tree fail (TclError: item already exists).
    assert len(listed) == len(set(listed)), "protocols listed twice: %s" % sorted(
        {p for p in listed if listed.count(p) > 1})
    assert sorted(listed) == sorted(_cryoflex_protocols())
    for name in listed:
        assert hasattr(cryoflex_scipion.protocols, name)


def test_every_protocol_builds_its_form_and_validates_missing_inputs(project):
    for name, cls in _cryoflex_protocols().items():
        prot = project.newProtocol(cls)
        assert list(prot.iterDefinitionAttributes()), name
        errors = prot.validate()  # must not raise
        assert errors, "%s accepts a run without inputs" % name
        assert all(isinstance(e, str) and e for e in errors)
        assert prot.getClassLabel()
        assert prot.summary() and prot.citations() is not None


def test_plugin_engine_command_and_variables():
    from cryoflex_scipion import Plugin
    cmd = Plugin.getEngineCommand("simulate")
    assert cmd.endswith("-m cryoflex_scipion.engine simulate") and sys.executable in cmd
    assert "CRYOFLEX_PYTHON" in Plugin.getVars()
    assert Plugin.validateInstallation() == []


def test_gpu_launch_is_queue_safe(project, monkeypatch):
    """runEngine leaves %(GPU)s for pyworkflow and doubles literal % in the arguments."""
    from pyworkflow.utils.process import buildRunCommand
    from cryoflex_scipion.protocols import ProtCryoFlexReconstruct
    prot = project.newProtocol(ProtCryoFlexReconstruct)
    calls = []
    monkeypatch.setattr(prot, "runJob", lambda program, args, **kw: calls.append((program, args)))
    prot.runEngine(["--note", "100%", "--x", "a b"])
    program, args = calls[-1]
    assert program.startswith("CUDA_VISIBLE_DEVICES=%(GPU)s ")
    cmd = buildRunCommand(program, args, 1, gpuList=[2, 3])
    assert "CUDA_VISIBLE_DEVICES=2,3 " in cmd and "--note 100% " in cmd and "'a b'" in cmd and "--device auto" in cmd
    prot.useGpu.set(False)
    prot.runEngine(["--note", "100%"])
    program, args = calls[-1]
    assert "%(GPU)s" not in program and "--note 100% " in args and args.endswith("--device cpu")


def test_gui_process_works_with_optimised_python(tmp_path):
    """The Scipion GUI runs `python -O`, where ProDy 2.6 cannot be imported: installation checks and
    form validation must not need it."""
    model = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "data", "adk_1ake_A.pdb")
    code = """
import sys
from cryoflex_scipion import sandbox
sandbox.configure(sys.argv[1])
from pwem import Domain
prots = [c for n, c in Domain.getProtocols().items() if c.__module__.startswith('cryoflex_scipion') and not c.isBase()]
bad = [(c.__name__, c.validateInstallation()) for c in prots if c.validateInstallation()]
from cryoflex_scipion.convert import light_atoms
names, elements, coords = light_atoms(sys.argv[2], 'name CA')
print(len(prots), bad, len(names), len(light_atoms(sys.argv[2], 'not hydrogen')[0]))
"""
    out = subprocess.run([sys.executable, "-O", "-c", code, str(tmp_path), model], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert "[]" in last and last.endswith("214 1661")
