from clipbd import fingerprint as fp


def test_every_source_file_is_fingerprinted_or_deliberately_left_out():
    listed = set(fp.CORE) | set(fp.NOT_IN_JOBS) | {f for files in fp.STAGES.values() for f in files}
    for path in fp.PKG.rglob("*.py"):
        rel = str(path.relative_to(fp.PKG))
        if rel.startswith(("attacks/", "defenses/")) and not rel.endswith(("__init__.py", "base.py")):
            continue  # one method per file: added through method_file()
        assert rel in listed, f"{rel} is in no stage of clipbd.fingerprint"
    for rel in listed:
        assert (fp.PKG / rel).is_file(), rel


def test_fingerprint_depends_on_the_method_file_only():
    badnet = fp.method_file("attack", "badnet")
    assert badnet == "attacks/badnet.py"
    assert fp.fingerprint("trigger", badnet) != fp.fingerprint("trigger", "attacks/sig.py")
    assert fp.fingerprint("trigger", badnet) == fp.fingerprint("trigger", badnet)
    assert fp.fingerprint("evaluate", "") == fp.fingerprint("evaluate")
    assert fp.method_file("attack", "clean") == ""
