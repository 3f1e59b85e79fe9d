"""No silent failures: each bad input of the issue "No silent failures, and results a user can look at" gives an
error naming the problem and the fix, or a warning; one test per row of its table."""

import codecs

import pytest
from spacy.vocab import Vocab
from typer.testing import CliRunner

from spacy_fsner.cli import app
from spacy_fsner.data.readers import read_docs


def write(tmp_path, name: str, text: str | bytes):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def convert(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["convert", *map(str, args)])
    return result.exit_code, result.output


# --- 3: a token-tag line with 3 columns, unknown prefixes ------------------------------------------------------


def test_tagged_line_with_three_columns_names_the_line_and_the_layout(tmp_path):
    path = write(tmp_path, "t.txt", "Aspirin\tB-DRUG\ncures\tO\nflu\tI-DISEASE\textra\n")
    for scheme in ("auto", "io"):
        code, output = convert(path, tmp_path / "out.spacy", "--format", "tagged", "--scheme", scheme)
        assert code == 1
        assert "t.txt, line 3: 3 columns, expected 2 (token and tag)" in output
        assert "mixes" not in output


def test_io_scheme_never_makes_a_prefix_part_of_a_label(tmp_path):
    path = write(tmp_path, "t.txt", "Aspirin\tB-DRUG\ncures\tO\nflu\tI-DISEASE\n")
    code, output = convert(path, tmp_path / "out.spacy", "--scheme", "io")
    assert code == 1
    assert "line 1: tag 'B-DRUG' has a B- prefix, but scheme 'io' reads bare types" in output
    assert not (tmp_path / "out.spacy").exists()


@pytest.mark.parametrize("scheme", ["auto", "bio"])
def test_unknown_tag_prefix_is_named_not_read_as_io(tmp_path, scheme):
    path = write(tmp_path, "t.txt", "Aspirin\tB-DRUG\ncures\tO\nflu\tX-DISEASE\n")
    with pytest.raises(ValueError, match=r"t\.txt, line 3: tag 'X-DISEASE' has the unknown prefix X-") as error:
        read_docs(path, Vocab(), format="tagged", scheme=scheme)
    assert "scheme 'io'" not in str(error.value)


# --- 4: a UTF-8 byte order mark ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, data_format",
    [
        ("t.txt", "Aspirin\tB-DRUG\ncures\tO\n", "tagged"),
        ("t.conll", "Aspirin NN B-NP B-DRUG\ncures VB B-VP O\n", "conll"),
        (
            "e.jsonl",
            '{"support": {"word": [["Aspirin"]], "label": [["drug"]]}, '
            '"query": {"word": [["Aspirin", "cures"]], "label": [["drug", "O"]]}, "types": ["drug"]}\n',
            "episodes",
        ),
    ],
)
@pytest.mark.parametrize("detect", [True, False])
def test_byte_order_mark_is_not_part_of_the_first_token(tmp_path, name, text, data_format, detect):
    path = write(tmp_path, name, codecs.BOM_UTF8 + text.encode())
    docs = read_docs(path, Vocab(), format="auto" if detect else data_format)
    assert docs[0][0].text == "Aspirin"
    assert docs[0].ents[0].text == "Aspirin"


# --- 6: files without sentences ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data_format, text",
    [("tagged", ""), ("conll", ""), ("conll", "-DOCSTART- -X- -X- O\n\n"), ("episodes", ""), ("tagged", "\n\n")],
)
def test_file_without_sentences_is_an_error(tmp_path, data_format, text):
    path = write(tmp_path, "empty.txt", text)
    code, output = convert(path, tmp_path / "out.spacy", "--format", data_format)
    assert code == 1
    assert "empty.txt has no sentences" in output
    assert not (tmp_path / "out.spacy").exists()


# --- 11: files that are not UTF-8, the CoNLL column count --------------------------------------------------------


@pytest.mark.parametrize("data_format", ["auto", "tagged", "conll", "episodes"])
def test_utf16_file_names_the_file_and_the_conversion(tmp_path, data_format):
    path = write(tmp_path, "u16.txt", "Aspirin\tB-DRUG\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"u16\.txt is not UTF-8 text \(UTF-16\?\): convert it with `iconv -f UTF-16"):
        read_docs(path, Vocab(), format=data_format)


def test_binary_file_names_the_file(tmp_path):
    path = write(tmp_path, "blob.bin", bytes(range(128, 256)) * 4)
    with pytest.raises(ValueError, match=r"blob\.bin is not UTF-8 text \(Latin-1 or binary\?\)"):
        read_docs(path, Vocab(), format="tagged")


def test_conll_column_count_error_names_an_option_that_exists(tmp_path):
    path = write(tmp_path, "de.conll", "EU NN B-NP O B-ORG\nbans VB B-VP O O\n")
    code, output = convert(path, tmp_path / "out.spacy", "--format", "conll")
    assert code == 1
    assert "expected 4 space-separated columns" in output and "`--columns` of convert" in output
    code, output = convert(path, tmp_path / "out.spacy", "--format", "conll", "--columns", "5")
    assert code == 0, output
    assert "wrote 1 docs with 1 entities" in output
