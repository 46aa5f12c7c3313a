from benchmarks.results_md import update_section


def test_update_section_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "RESULTS.md"
    update_section("a", "first A", path)
    update_section("b", "only B", path)
    update_section("a", "second A", path)
    text = path.read_text()
    assert "second A" in text and "first A" not in text and "only B" in text
    assert text.index("second A") < text.index("only B")
    assert text.count("<!-- a:begin -->") == 1
