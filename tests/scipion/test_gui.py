"""The Scipion GUI, drawn for real under a virtual X display (Xvfb): the project window's protocol tree and
every CryoFlex protocol's form.

A display is taken from $DISPLAY when one answers, else an Xvfb is started (installed with apt-get when
missing and the tests run as root, as on CI); without any, the tests are skipped with the reason printed.
Screenshots go to $CRYOFLEX_TEST_ARTIFACTS (default: the test's temporary folder).
"""
import configparser
import os
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

import cryoflex_scipion

CONF = os.path.join(os.path.dirname(cryoflex_scipion.__file__), "protocols.conf")
FORMS_TO_SAVE = ("ProtCryoFlexElasticAlign", "ProtCryoFlexCryoTrans")


def _display_answers(display):
    try:
        import tkinter
        root = tkinter.Tk(screenName=display)
        root.destroy()
        return True
    except Exception:
        return False


def _xvfb():
    path = shutil.which("Xvfb")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "xvfb"], capture_output=True,
                       timeout=600, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        path = shutil.which("Xvfb")
    return path


@pytest.fixture(scope="module")
def display():
    if os.environ.get("DISPLAY") and _display_answers(os.environ["DISPLAY"]):
        yield os.environ["DISPLAY"]
        return
    xvfb = _xvfb()
    if xvfb is None:
        reason = "NO DISPLAY: neither $DISPLAY nor Xvfb (apt-get install xvfb), so the GUI was not drawn"
        print("\n" + reason)
        pytest.skip(reason)
    number = next(n for n in range(90, 200) if not os.path.exists("/tmp/.X11-unix/X%d" % n))
    proc = subprocess.Popen([xvfb, ":%d" % number, "-screen", "0", "1920x1200x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        if os.path.exists("/tmp/.X11-unix/X%d" % number):
            break
        time.sleep(0.1)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = ":%d" % number
    yield os.environ["DISPLAY"]
    proc.terminate()
    proc.wait(10)
    if old is None:
        os.environ.pop("DISPLAY", None)
    else:
        os.environ["DISPLAY"] = old


@pytest.fixture
def artifacts(tmp_path):
    folder = os.environ.get("CRYOFLEX_TEST_ARTIFACTS") or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    return folder


def _screenshot(window_root, display, path):
    """PNG of one top-level window; returns the image as an array."""
    from PIL import ImageGrab
    window_root.deiconify()  # windows are built withdrawn until show()
    window_root.lift()
    for _ in range(5):
        window_root.update()
        time.sleep(0.1)
    x, y = window_root.winfo_rootx(), window_root.winfo_rooty()
    w, h = window_root.winfo_width(), window_root.winfo_height()
    image = ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=display)
    image.save(path)
    return np.asarray(image)


def _sections():
    parser = configparser.ConfigParser()
    parser.optionxform = str
    parser.read(CONF)
    text = parser["PROTOCOLS"]["Protocols SPA"]
    import json
    tree = json.loads(text)
    cryoflex = next(node for node in tree if node.get("text") == "CryoFlex")
    return {section["text"]: [(c["value"], c["text"]) for c in section.get("children", [])]
            for section in cryoflex["children"]}


def _cryoflex_protocols():
    from pwem import Domain
    return {name: cls for name, cls in Domain.getProtocols().items()
            if cls.__module__.startswith("cryoflex_scipion") and not cls.isBase()}


def _walk(widget):
    yield widget
    for child in widget.winfo_children():
        yield from _walk(child)


def test_protocol_tree_draws_every_cryoflex_protocol_in_its_section(project, display, artifacts):
    from pyworkflow.gui.project.project import ProjectWindow
    from pyworkflow.gui.project.viewprotocols import ProtocolsView
    window = ProjectWindow(project.getPath())  # a repeated tree item raises TclError here
    try:
        view = next(w for w in _walk(window.root) if isinstance(w, ProtocolsView))
        tree = view.protTree

        def items(parent=""):
            for item in tree.get_children(parent):
                yield item
                yield from items(item)
        drawn = set(items())
        protocols = _cryoflex_protocols()
        sections = _sections()
        assert sorted(v for entries in sections.values() for v, _ in entries) == sorted(protocols)
        for section, entries in sections.items():
            key = ".Protocols SPA.CryoFlex.%s" % section
            assert key in drawn, "section %r not in the drawn tree" % section
            children = tree.get_children(key)
            assert list(children) == ["%s.%s" % (key, value) for value, _ in entries], (section, children)
            assert [tree.item(i, "text") for i in children] == [text for _, text in entries]
            for item, (value, _) in zip(children, entries):
                assert view.domain.getProtocols()[value] is protocols[value]  # the tree item opens our class
        for item in drawn:  # the CryoFlex branch open, the rest closed, for the screenshot
            tree.item(item, open=item.startswith(".Protocols SPA.CryoFlex") or item == ".Protocols SPA")
        image = _screenshot(window.root, display, os.path.join(artifacts, "protocol_tree.png"))
        assert image.shape[0] > 300 and image.shape[1] > 500 and image.std() > 10  # drawn, not blank
    finally:
        window.root.destroy()


def test_every_protocol_form_opens_with_its_conditions(project, display, artifacts):
    from pyworkflow.gui.form import FormWindow
    from pyworkflow.protocol.params import LEVEL_ADVANCED
    opened = []
    for name, cls in sorted(_cryoflex_protocols().items()):
        prot = project.newProtocol(cls)
        prot.expertLevel.set(LEVEL_ADVANCED)  # draw the advanced parameters too
        form = FormWindow("Run %s" % name, prot, lambda *args, **kwargs: None)
        try:
            form.root.update()
            form._checkAllChanges()  # every condition, with the widgets shown or hidden
            for param_name, _ in prot.iterDefinitionAttributes():
                prot.evalParamCondition(param_name)
            assert set(n for n, _ in prot.iterDefinitionAttributes()) <= set(form.widgetDict) | {"runName"}, name
            assert prot.getRunName().startswith("cryoflex - "), prot.getRunName()  # not the package name
            for wizard in form.wizards.values():
                assert callable(getattr(wizard, "show", None)), (name, wizard)
            if name in FORMS_TO_SAVE:
                image = _screenshot(form.root, display, os.path.join(artifacts, "form_%s.png" % name))
                assert image.shape[0] > 300 and image.std() > 10
            opened.append(name)
        finally:
            form.root.destroy()
    assert len(opened) == len(_cryoflex_protocols())
    labels = [re.sub(r"\s+", " ", cls.getClassLabel()) for cls in _cryoflex_protocols().values()]
    assert all(labels)
