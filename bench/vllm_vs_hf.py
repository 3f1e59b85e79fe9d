"""The Hugging Face path against the vLLM backend (`spacy_fsner.VLLM.v1`) side by side in one run: the same pipeline
(SmolLM2 + the shipped base adapter, joint template) on the same Few-NERD sentences, at 4 and 18 labels, once with
each model: sentences/s, the ratio, and whether both found the same entities (and candidates). A server must be
running (scripts/vllm_server.sh, the adapter served as `--lora fsner=spacy_fsner/adapters/fsner-base-smollm2`).

    python -m bench.vllm_vs_hf --url http://127.0.0.1:8765 --sentences 40 --labels 4 18 --threads 1
"""

from __future__ import annotations

import json
import time
from collections import Counter

from bench.common import REPO, SMOLLM2, TEMPLATES, base_parser, set_threads


def main() -> None:
    parser = base_parser(__doc__, threads=1)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the vLLM server")
    parser.add_argument("--adapter", default="fsner", help="the served LoRA name of fsner-base-smollm2 ('' for none)")
    parser.add_argument("--sentences", type=int, default=40)
    parser.add_argument("--labels", type=int, nargs="+", default=[4, 18])
    parser.add_argument("--templates", nargs="+", default=["joint"], choices=sorted(TEMPLATES))
    parser.add_argument("--batch-size", type=int, default=64, help="nlp.pipe's batch size (docs per model call)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    threads = set_threads(args.threads)

    import spacy

    import spacy_fsner.models.vllm  # noqa: F401  registers spacy_fsner.VLLM.v1
    from spacy_fsner.data.readers import read_docs

    vocab = spacy.blank("en").vocab
    test = read_docs(REPO / "assets" / "fewnerd_inter_sample.txt", vocab)
    dev = read_docs(REPO / "assets" / "fewnerd_inter_dev_sample.txt", vocab)
    ranked = [label for label, _ in Counter(e.label_ for d in test + dev for e in d.ents).most_common()]
    texts = [d.text for d in test[: args.sentences]]
    adapter = args.adapter or None
    models = {
        "hf": {
            "@llm_models": "spacy_fsner.CausalLM.v1",
            "name": SMOLLM2,
            **({"adapter": "fsner-base-smollm2"} if adapter else {}),
            "dtype": "float32",
            "device": "cpu",
            "max_new_tokens": args.max_new_tokens,
        },
        "vllm": {
            "@llm_models": "spacy_fsner.VLLM.v1",
            "base_url": args.url,
            **({"adapter": adapter} if adapter else {}),
            "max_new_tokens": args.max_new_tokens,
        },
    }
    rows = []
    for template in args.templates:
        for n in args.labels:
            labels = ranked[:n]
            found, seconds = {}, {}
            for name, model in models.items():
                nlp = spacy.blank("en")
                config = {"labels": labels, "template": {"@misc": TEMPLATES[template]}, "model": model}
                nlp.add_pipe("fsner", config=config)
                list(nlp.pipe(texts[:4]))  # loads the model (HF) or the tokenizer and warms the server (vLLM)
                start = time.perf_counter()
                docs = list(nlp.pipe(texts, batch_size=args.batch_size))
                seconds[name] = time.perf_counter() - start
                found[name] = [
                    (
                        [(e.start_char, e.end_char, e.label_) for e in d.ents],
                        [(s.text, s.label_) for s in d.spans["fsner"]],
                    )
                    for d in docs
                ]
            same_ents = sum(a[0] == b[0] for a, b in zip(found["hf"], found["vllm"], strict=True))
            same_candidates = sum(a[1] == b[1] for a, b in zip(found["hf"], found["vllm"], strict=True))
            rows.append(
                {
                    "template": template,
                    "labels": n,
                    "sentences": len(texts),
                    "hf_sentences_per_s": len(texts) / seconds["hf"],
                    "vllm_sentences_per_s": len(texts) / seconds["vllm"],
                    "entities": sum(len(e) for e, _ in found["hf"]),
                    "same_ents": same_ents,
                    "same_candidates": same_candidates,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    out = REPO / "bench" / "results" / "vllm_vs_hf.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": threads, "adapter": adapter, "rows": rows}, indent=2))
    print("\n| template | labels | HF sent./s | vLLM sent./s | vLLM / HF | entities | same ents | same candidates |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["vllm_sentences_per_s"] / r["hf_sentences_per_s"]
        print(
            f"| {r['template']} | {r['labels']} | {r['hf_sentences_per_s']:.2f} | {r['vllm_sentences_per_s']:.2f} | "
            f"{ratio:.2f}x | {r['entities']} | {r['same_ents']}/{r['sentences']} | "
            f"{r['same_candidates']}/{r['sentences']} |"
        )


if __name__ == "__main__":
    main()
