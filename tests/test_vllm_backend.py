"""The vLLM backend (`spacy_fsner.VLLM.v1`): its response grammar, its HTTP client, and a real server.

Without a server: the grammar (`decoding.grammar`) allows exactly the bytes the in-process constraint allows, step by
step along random and plausible responses about real sentences, and rejects what it rejects (read by a small
interpreter of the EBNF it writes); the client's requests, answers and errors against a scripted HTTP server.

With a server (`FSNER_VLLM_URL`, e.g. http://127.0.0.1:8000, serving SmolLM2 with the shipped adapter as the LoRA
module `FSNER_VLLM_ADAPTER`, default `fsner`; `scripts/vllm_server.sh`): xgrammar's token masks equal the
constraint's, and the answers, candidates and entities equal the Hugging Face path's on the same prompts. Those
tests skip without the variable, and fail instead when `FSNER_VLLM_REQUIRED=1` (CI sets both).
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import spacy

import spacy_fsner.models.vllm  # noqa: F401  registers spacy_fsner.VLLM.v1 (the installed entry points may predate it)
from spacy_fsner.data.readers import read_docs
from spacy_fsner.decoding.constraint import SubstringConstraint
from spacy_fsner.decoding.encoding import encode_prompt
from spacy_fsner.decoding.grammar import literal, response_grammar
from spacy_fsner.decoding.vocab import TokenTrie
from spacy_fsner.models.vllm import VLLMModel, VLLMServerError, vllm_v1
from spacy_fsner.pipeline.task import make_ner_task
from spacy_fsner.prompts.templates import (
    alpaca_template_v1,
    cllmfs_template_v1,
    joint_template_v1,
    shared_input_template_v1,
)

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
TEMPLATES = {
    "joint": joint_template_v1,
    "cllmfs": cllmfs_template_v1,
    "alpaca": alpaca_template_v1,
    "shared": shared_input_template_v1,
}


@pytest.fixture(scope="module")
def sentences():
    nlp = spacy.blank("en")
    return read_docs(ASSETS / "fewnerd_inter_sample.txt", nlp.vocab)


def requests_for(docs, template: str, labels):
    task = make_ner_task(labels=list(labels), template=TEMPLATES[template]())
    return [r for prompts in task.generate_prompts(docs) for r in prompts.requests]


# --- the grammar, read back by a small interpreter --------------------------------------------------------------


class Grammar:
    """The EBNF `response_grammar` writes (rules of alternatives of sequences of literals, rule names and one
    parenthesised group of literals), walked byte by byte: a configuration is the stack of what is left to match."""

    def __init__(self, text: str) -> None:
        self.rules: dict[str, list[tuple]] = {}
        for line in text.strip().splitlines():
            name, body = line.split(" ::= ")
            assert name not in self.rules, f"rule {name} defined twice"
            self.rules[name] = self._alternatives(body)
        assert text.startswith("root ::= ")

    def _alternatives(self, body: str) -> list[tuple]:
        tokens = re.findall(r'"(?:[^"\\]|\\.)*"|[()|]|[A-Za-z_][A-Za-z0-9_]*', body)
        alternatives, current, group, outer = [], [], None, []
        for token in tokens:
            if token == "(":
                group, outer, current = [], current, []
            elif token == ")":
                group.append(tuple(current))
                outer.append(("group", tuple(group)))
                current, group = outer, None
            elif token == "|":
                (group if group is not None else alternatives).append(tuple(current))
                current = []
            else:
                current.append(("lit", decode_literal(token)) if token.startswith('"') else ("ref", token))
        alternatives.append(tuple(current))
        return alternatives

    def start(self) -> frozenset:
        return self._close({(("ref", "root"),)})

    def _close(self, configs) -> frozenset:
        """Expand rule references and drop matched literals until every stack starts with an unmatched byte."""
        done, todo = set(), list(configs)
        while todo:
            stack = todo.pop()
            if stack in done:
                continue
            done.add(stack)
            if not stack:
                continue
            kind, value = stack[0]
            if kind == "ref":
                todo += [alternative + stack[1:] for alternative in self.rules[value]]
            elif kind == "group":
                todo += [alternative + stack[1:] for alternative in value]
            elif kind == "lit" and not value:
                todo.append(stack[1:])
        return frozenset(s for s in done if not s or (s[0][0] == "lit" and s[0][1]))

    def next_bytes(self, configs) -> set[int]:
        return {stack[0][1][0] for stack in configs if stack}

    def accepts(self, configs) -> bool:
        return () in configs

    def step(self, configs, b: int) -> frozenset:
        moved = {(("lit", s[0][1][1:]),) + s[1:] for s in configs if s and s[0][1][0] == b}
        return self._close(moved)


def decode_literal(token: str) -> bytes:
    text = re.sub(
        r"\\(u[0-9a-f]{4}|U[0-9a-f]{8}|.)",
        lambda m: chr(int(m.group(1)[1:], 16)) if m.group(1)[0] in "uU" and len(m.group(1)) > 1 else m.group(1),
        token[1:-1],
    )
    return text.encode("utf-8")


BYTES = TokenTrie.from_token_bytes([bytes([b]) for b in range(256)])
"""A vocabulary of the 256 bytes (token id = byte): the constraint's automaton, one byte per step."""


def walk(request, rng: random.Random, forced: bytes = b"", steps: int = 400) -> int:
    """Walk the constraint and the grammar together, byte by byte: `forced` first, then random allowed bytes
    (rarely the end); at every step both allow the same bytes and agree on whether the response may end there.
    Returns the number of steps."""
    constraint = SubstringConstraint(request.fmt, request.source, request.starts, request.ends, BYTES)
    grammar = Grammar(response_grammar(request))
    state, configs = constraint.initial(), grammar.start()
    for i in range(steps):
        allowed = set(constraint.allowed_tokens(state)) if not constraint.is_done(state) else set()
        assert grammar.next_bytes(configs) == allowed, (request.source, i)
        assert grammar.accepts(configs) == constraint.can_stop(state), (request.source, i)
        if not allowed or (constraint.can_stop(state) and i >= len(forced) and rng.random() < 0.05):
            return i
        opener = request.fmt.open.encode()[0]  # mostly open an entity rather than end (random bytes end early)
        b = forced[i] if i < len(forced) else opener if opener in allowed and rng.random() < 0.7 else None
        b = rng.choice(sorted(allowed)) if b is None else b
        state, configs = constraint.advance(state, b), grammar.step(configs, b)
        assert configs, "the grammar rejects what the constraint allows"
    return steps


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_grammar_allows_the_bytes_the_constraint_allows(sentences, template):
    """Random walks on 12 real sentences (non-ASCII ones among them) per template."""
    rng = random.Random(7)
    docs = rng.sample(sentences[:150], 8) + [d for d in sentences if not d.text.isascii()][:4]
    labels = sorted({e.label_ for d in sentences for e in d.ents})[:4]
    steps = 0
    for request in requests_for(docs, template, labels)[:: 1 if template == "joint" else 4]:
        for _ in range(5):
            steps += walk(request, rng)
    assert steps > 800  # the walks went somewhere


def test_grammar_follows_plausible_answers(sentences):
    """Answers a model writes: the gold entities in order, then one repeated (which ends the response), with
    labels; and the order rule's earliest occurrence (a string that occurs twice)."""
    rng = random.Random(3)
    docs = [d for d in sentences if len(d.ents) >= 2][:20]
    labels = sorted({e.label_ for d in docs for e in d.ents})
    for request, doc in zip(requests_for(docs, "joint", labels), docs, strict=True):
        gold = [(e.text, e.label_) for e in doc.ents]
        answer = request.fmt.render(gold).removesuffix(request.fmt.end)
        walk(request, rng, (answer + request.fmt.render([gold[0]])).encode())
        walk(request, rng, request.fmt.render(gold).encode())
    twice = make_ner_task(labels=["X"], template=joint_template_v1())
    doc = spacy.blank("en")("Paris , not Paris Hilton , and Paris again .")
    (request,) = next(iter(twice.generate_prompts([doc]))).requests
    walk(request, rng, b" <<< Paris >>> X; <<< Paris Hilton >>> X; <<< Paris >>> X; <<< again >>> X;\n")


@pytest.mark.parametrize(
    "answer",
    [
        " <<< Pari >>> X;",  # not on a token boundary
        " <<< London >>> X;",  # not in the text
        " <<< Paris >>> Y;",  # not a label
        " <<< Paris >>> X; <<< Paris >>> X; <<<",  # after a repeat the response ends
        " <<< Paris >>>\n",  # no label
        "Paris",  # no marker
        " <<<  >>> X;",  # empty entity
    ],
)
def test_grammar_rejects_what_the_constraint_rejects(answer):
    task = make_ner_task(labels=["X"], template=joint_template_v1())
    (request,) = next(iter(task.generate_prompts([spacy.blank("en")("Paris is in France .")]))).requests
    constraint = SubstringConstraint(request.fmt, request.source, request.starts, request.ends, BYTES)
    grammar = Grammar(response_grammar(request))
    state, configs = constraint.initial(), grammar.start()
    for b in answer.encode():
        state = constraint.advance(state, b) if state and not constraint.is_done(state) else frozenset()
        configs = grammar.step(configs, b)
    assert not configs and not state


@pytest.mark.parametrize("text", ['say "hi" \\ now', "tab\there\nnew", "Théâtre – ok", "emoji 😀 \x7f \u2028 end"])
def test_literal_round_trips(text):
    assert decode_literal(literal(text)) == text.encode("utf-8")
    assert "\n" not in literal(text)  # one rule per line


def test_grammar_grows_linearly(sentences):
    """Rules per boundary stay constant: the grammar of a 40-word sentence is a few hundred short rules."""
    doc = max(sentences[:300], key=len)
    (request, *_) = requests_for([doc], "joint", ["A", "B"])
    rules = response_grammar(request).splitlines()
    boundaries = len(set(request.starts) | set(request.ends))
    assert len(rules) <= 7 * boundaries + 3


# --- the client, against a scripted server ------------------------------------------------------------------------


class FakeVLLM:
    """A scripted OpenAI-compatible server: `/v1/models` lists `models`, `/v1/completions` answers `answer(body)`
    (or an error status), and every request body is kept in `bodies`."""

    def __init__(self, models, answer) -> None:
        self.models, self.answer, self.bodies = models, answer, []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _reply(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._reply(200, {"object": "list", "data": fake.models})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.bodies.append(body)
                self._reply(*fake.answer(body))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def served(root: Path, adapters=("fsner",), max_model_len=2048):
    base = {"id": "base", "root": str(root), "parent": None, "max_model_len": max_model_len}
    return [base] + [
        {"id": a, "root": f"/adapters/{a}", "parent": "base", "max_model_len": max_model_len} for a in adapters
    ]


@pytest.fixture
def fake_server(tiny_model_dir):
    servers = []

    def start(answer, **kwargs):
        servers.append(FakeVLLM(served(tiny_model_dir, **kwargs), answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def completion(tokenizer, text: str, extra: list[int] = (), finish: str = "stop"):
    """A completion choice that writes `text` (then `extra` ids), as vLLM returns it with `return_token_ids`."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + list(extra)
    logprobs = [-0.5] * len(ids)
    return 200, {
        "choices": [{"text": text, "token_ids": ids, "finish_reason": finish, "logprobs": {"token_logprobs": logprobs}}]
    }


def test_client_sends_the_hf_prompt_ids_and_the_grammar(fake_server, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    eos = tokenizer.eos_token_id
    # the end marker, then the end-of-sequence token the server's grammar forces after it (dropped)
    server = fake_server(lambda body: completion(tokenizer, " <<< Paris >>> LOC;\n", [eos]))
    nlp = spacy.blank("en")
    model = {"@llm_models": "spacy_fsner.VLLM.v1", "base_url": server.url + "/v1/", "adapter": "fsner"}
    component = nlp.add_pipe("fsner", config={"labels": ["PER", "LOC"], "model": model})
    doc = nlp("She flew to Paris .")
    assert [(e.text, e.label_) for e in doc.ents] == [("Paris", "LOC")]
    (body,) = server.bodies
    (request,) = next(iter(component.task.generate_prompts([nlp.make_doc(doc.text)]))).requests
    parts = encode_prompt(tokenizer, request.prefix, request.suffix, request.tail)
    assert body["prompt"] == [i for part in parts for i in part]
    assert body["structured_outputs"] == {"grammar": response_grammar(request)}
    assert (body["model"], body["temperature"], body["repetition_penalty"], body["max_tokens"]) == ("fsner", 0, 1, 128)
    (generation,) = component.model.generate([request])
    assert generation.finished and generation.text == " <<< Paris >>> LOC;\n" and eos not in generation.token_ids


def test_client_sends_each_distinct_prompt_once_and_keeps_order(fake_server, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    server = fake_server(lambda body: completion(tokenizer, " <im_end>"))
    model = vllm_v1(base_url=server.url, concurrency=4)
    requests = requests_for([spacy.blank("en")(t) for t in ["A b .", "C d .", "A b ."]], "cllmfs", ["X", "Y"])
    generations = model.generate(requests)
    assert len(server.bodies) == 4 and len(generations) == 6
    assert all(g.finished and g.text == " <im_end>" for g in generations)
    assert {b["model"] for b in server.bodies} == {"base"}


def test_client_flags_unfinished_and_too_long(fake_server, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    short, long = requests_for(
        [spacy.blank("en")("Paris ."), spacy.blank("en")("Paris is big . " * 8)], "cllmfs", ["X"]
    )
    lengths = [len(tokenizer(r.prompt)["input_ids"]) for r in (short, long)]
    answer = lambda body: completion(tokenizer, " <<< Pa", finish="length")  # noqa: E731
    server = fake_server(answer, max_model_len=lengths[0] + 8)  # room for the short one's 8 new tokens only
    first, second = vllm_v1(base_url=server.url, max_new_tokens=8).generate([short, long])
    assert not first.finished and first.text == " <<< Pa" and not first.too_long
    assert second.too_long and second.text == "" and len(server.bodies) == 1


def test_client_errors_name_the_problem_and_the_fix(fake_server, tiny_model_dir):
    server = fake_server(lambda body: (400, {"error": {"message": "maximum context length is 2048 tokens"}}))
    (request,) = requests_for([spacy.blank("en")("Paris .")], "cllmfs", ["X"])
    with pytest.raises(
        VLLMServerError, match=r"does not serve the LoRA adapter 'other'.*\['fsner'\].*--lora-modules other="
    ):
        vllm_v1(base_url=server.url, adapter="other").generate([request])
    with pytest.raises(VLLMServerError, match=r"does not serve the model 'llama'.*\['base'\]"):
        vllm_v1(base_url=server.url, model="llama").generate([request])
    with pytest.raises(VLLMServerError, match=r"HTTP 400.*maximum context length"):
        vllm_v1(base_url=server.url).generate([request])
    closed = FakeVLLM([], lambda body: (200, {}))
    closed.close()
    with pytest.raises(VLLMServerError, match=rf"No vLLM server answers at {closed.url}.*scripts/vllm_server.sh"):
        vllm_v1(base_url=closed.url).generate([request])
    with pytest.raises(ValueError, match="concurrency"):
        vllm_v1(concurrency=0)


def test_client_builds_without_a_server():
    """A pipeline with the vLLM model is configured, saved and loaded without contacting anything."""
    nlp = spacy.blank("en")
    nlp.add_pipe(
        "fsner",
        config={"labels": ["PER"], "model": {"@llm_models": "spacy_fsner.VLLM.v1", "base_url": "http://127.0.0.1:9"}},
    )
    assert isinstance(nlp.get_pipe("fsner").model, VLLMModel)
    assert nlp.config["components"]["fsner"]["model"]["base_url"] == "http://127.0.0.1:9"


# --- a real server ------------------------------------------------------------------------------------------------

SERVER_URL = os.environ.get("FSNER_VLLM_URL")
ADAPTER = os.environ.get("FSNER_VLLM_ADAPTER", "fsner")
VLLM_PYTHON = Path(os.environ.get("FSNER_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))


@pytest.fixture(scope="module")
def server():
    """The running server's URL and the directory of the model it serves (its `/v1/models` root)."""
    if not SERVER_URL:
        message = "FSNER_VLLM_URL is not set (start a server with scripts/vllm_server.sh and set it)"
        if os.environ.get("FSNER_VLLM_REQUIRED") == "1":
            pytest.fail(f"FSNER_VLLM_REQUIRED=1 but {message}")
        pytest.skip(message)
    model = vllm_v1(base_url=SERVER_URL, adapter=ADAPTER)
    return SERVER_URL, Path(model.served_source)


@pytest.fixture(scope="module")
def dev_docs():
    return read_docs(ASSETS / "fewnerd_inter_dev_sample.txt", spacy.blank("en").vocab)


@pytest.mark.slow
def test_xgrammar_masks_equal_the_constraint(server, sentences):
    """The server's grammar engine, as vLLM sets it up, allows exactly the tokens the Hugging Face path allows, at
    every step of random token walks and of the gold answers tokenized (real sentences, non-ASCII ones among them)."""
    from transformers import AutoTokenizer

    if not VLLM_PYTHON.exists():
        pytest.fail(f"no vLLM environment at {VLLM_PYTHON} (scripts/vllm_venv.sh, or set FSNER_VLLM_PYTHON)")
    _, model_dir = server
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    trie = TokenTrie.from_tokenizer(tokenizer)
    eos = tokenizer.eos_token_id
    rng = random.Random(11)
    docs = rng.sample(sentences[:200], 8) + [d for d in sentences if not d.text.isascii() and d.ents][:6]
    labels = sorted({e.label_ for d in docs for e in d.ents})
    cases, expected = [], []
    for template in ("joint", "cllmfs"):
        for request, doc in zip(
            requests_for(docs, template, labels[:1] if template == "cllmfs" else labels), docs, strict=True
        ):
            constraint = SubstringConstraint(request.fmt, request.source, request.starts, request.ends, trie)
            gold = [(e.text, e.label_) for e in doc.ents] if template == "joint" else [e.text for e in doc.ents][:2]
            for forced in ([], tokenizer(request.fmt.render(gold), add_special_tokens=False)["input_ids"]):
                state, path, masks = constraint.initial(), [], []
                for i in range(60):
                    allowed = set(constraint.allowed_tokens(state)) | ({eos} if constraint.can_stop(state) else set())
                    masks.append(sorted(allowed) if not constraint.is_done(state) else [eos])
                    if constraint.is_done(state):
                        break
                    choices = sorted(allowed - {eos}) or [eos]
                    token = forced[i] if i < len(forced) else rng.choice(choices)
                    path.append(token)
                    if token == eos:
                        break
                    state = constraint.advance(state, token)
                cases.append({"grammar": response_grammar(request), "path": path})
                expected.append(masks)
    run = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "tests" / "xgrammar_masks.py")],
        input=json.dumps({"model": str(model_dir), "cases": cases}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    results = json.loads(run.stdout)
    for case, masks, result in zip(cases, expected, results, strict=True):
        assert all(result["accepted"]), case["path"]
        assert result["masks"][: len(masks)] == masks
    assert sum(len(c["path"]) for c in cases) > 500


def ner_task(template: str, labels, shots=()):
    task = make_ner_task(labels=list(labels), template=TEMPLATES[template]())
    if shots:
        task.set_demonstrations(shots)
    return task


def answer_both(server, task, docs, adapter: str | None):
    """The Hugging Face path's and the server's answers to the same prompts, and the docs each annotates."""
    from spacy_fsner.models.causal_lm import causal_lm_v1

    url, model_dir = server
    hf = causal_lm_v1(
        str(model_dir),
        adapter="fsner-base-smollm2" if adapter else None,
        dtype="float32",
        device="cpu",
        max_new_tokens=48,
    )
    remote = vllm_v1(base_url=url, adapter=adapter, max_new_tokens=48)
    prompts = [[p] for p in task.generate_prompts(docs)]
    out = []
    for model in (hf, remote):
        responses = model(prompts)
        annotated = list(task.parse_responses([d.copy() for d in docs], responses))
        out.append(([g for doc in responses for shard in doc for g in shard.generations], annotated))
    return out


def spans(doc, group: bool = False):
    found = doc.spans["fsner"] if group else doc.ents
    return [(s.start_char, s.end_char, s.label_) for s in found]


@pytest.mark.slow
@pytest.mark.parametrize("adapter", [None, ADAPTER], ids=["base", "adapter"])
def test_joint_template_same_entities_as_hf(server, dev_docs, adapter):
    """12 real sentences (Few-NERD dev, the types the shipped adapter knows), joint template, greedy, float32: the
    same tokens, text and entities as the Hugging Face path."""
    labels = ["person-other", "building-other", "organization-religion", "building-library"]
    task = ner_task("joint", labels, [d for d in dev_docs[200:] if d.ents][:2] if adapter is None else ())
    docs = dev_docs[:12]
    (hf_answers, hf_docs), (answers, docs_out) = answer_both(server, task, docs, adapter)
    assert [(g.text, g.token_ids, g.finished) for g in answers] == [
        (g.text, g.token_ids, g.finished) for g in hf_answers
    ]
    assert [spans(d) for d in docs_out] == [spans(d) for d in hf_docs]
    assert sum(len(d.ents) for d in hf_docs) >= 5  # the model did write entities


@pytest.mark.slow
@pytest.mark.parametrize("adapter", [None, ADAPTER], ids=["base", "adapter"])
def test_per_label_template_same_answers_as_hf(server, dev_docs, adapter):
    """The shared-input (per-label) template with demonstrations: the same answers and candidates as the Hugging
    Face path. `doc.ents` choose between overlapping candidates of different labels by score, and the server's
    scores are taken under the grammar's mask: they agree on the docs without such overlaps."""
    labels = ["person-other", "building-other", "organization-religion"]
    shots = [d for d in dev_docs[200:] if any(e.label_ in labels for e in d.ents)][:3]
    task = ner_task("shared", labels, shots)
    docs = dev_docs[:10]
    (hf_answers, hf_docs), (answers, docs_out) = answer_both(server, task, docs, adapter)
    assert [(g.text, g.token_ids, g.finished) for g in answers] == [
        (g.text, g.token_ids, g.finished) for g in hf_answers
    ]
    assert [spans(d, group=True) for d in docs_out] == [spans(d, group=True) for d in hf_docs]
    assert sum(len(d.spans["fsner"]) for d in hf_docs) >= 5
    for hf_doc, doc in zip(hf_docs, docs_out, strict=True):
        candidates = list(hf_doc.spans["fsner"])
        if all(a.end <= b.start or b.end <= a.start for i, a in enumerate(candidates) for b in candidates[i + 1 :]):
            assert spans(doc) == spans(hf_doc)


@pytest.mark.slow
def test_base_and_adapter_requests_mixed_in_one_batch(server, dev_docs):
    """Base and LoRA requests in flight together (the server batches them): each gets its own model's answers.
    On CPU with one LoRA slot the base requests would get the adapter's (scripts/vllm_server.sh leaves one free)."""
    url, _ = server
    labels = ["person-other", "building-other"]
    task = ner_task("joint", labels)
    requests = [r for p in task.generate_prompts(dev_docs[:8]) for r in p.requests]
    alone = {a: vllm_v1(base_url=url, adapter=a, max_new_tokens=32).generate(requests) for a in (None, ADAPTER)}
    mixed: dict = {}
    threads = [
        threading.Thread(
            target=lambda a=a: mixed.__setitem__(
                a, vllm_v1(base_url=url, adapter=a, max_new_tokens=32).generate(requests)
            )
        )
        for a in (None, ADAPTER)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a in (None, ADAPTER):
        assert [g.text for g in mixed[a]] == [g.text for g in alone[a]]
    assert [g.text for g in alone[None]] != [g.text for g in alone[ADAPTER]]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
