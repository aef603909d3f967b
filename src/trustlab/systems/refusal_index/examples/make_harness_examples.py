"""Writes the worked example of `--from-samples`: two lm-eval --log_samples files answered by the toy model.

Run from the repository root: python src/trustlab/systems/refusal_index/examples/make_harness_examples.py
"""
import hashlib
import json
from pathlib import Path

from trustlab.data.factual_qa import load_factual_qa, sample_items
from trustlab.llm.base import ChatRequest
from trustlab.llm.grading import grade_answer
from trustlab.systems.refusal_index.method import PROMPTS
from trustlab.systems.refusal_index.toy import ToyQABackend


def main() -> None:
    """Write the two files next to this script."""
    items = sample_items(load_factual_qa(), 40, seed=1)
    toy = ToyQABackend(items)
    out = Path(__file__).parent
    def h(x): return hashlib.sha256(x.encode()).hexdigest()
    def write(name, prompt, docs):
        lines = []
        for i, it in docs:
            text = toy.generate([ChatRequest(PROMPTS[prompt].messages(it.question), max_tokens=24)])[0].text
            doc = {"question": it.question, "answers": list(it.answers)}
            lines.append(json.dumps({"doc_id": i, "doc": doc, "target": it.answers[0],
                "arguments": {"gen_args_0": {"arg_0": it.question, "arg_1": {"until": ["\n"], "max_gen_toks": 24}}},
                "resps": [[text]], "filtered_resps": [text], "filter": "none", "metrics": ["exact_match"],
                "doc_hash": h(json.dumps(doc)), "prompt_hash": h(prompt + it.question), "target_hash": h(it.answers[0]),
                "exact_match": float(grade_answer(text, it.answers) == "correct")}, ensure_ascii=False))
        (out / name).write_text("\n".join(lines) + "\n")
        return lines
    p1 = write("samples_factqa_refusal_2026-01-01T00-00-00.jsonl", "standard", list(enumerate(items)))
    ref = [(i, it) for i, it in enumerate(items) if json.loads(p1[i])["filtered_resps"][0] == "I don't know."]
    write("samples_factqa_forced_2026-01-01T00-00-00.jsonl", "forced", ref)
    print(len(items), len(ref))


if __name__ == "__main__":
    main()
