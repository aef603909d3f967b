"""trustlab extract: loopback HTTP victim, Python-factory victim, graph folders, budget, save/reload, bad input."""

import json

import pytest
import torch

from trustlab.errors import UserError
from trustlab.systems.gfm_extraction.data import Graph
from trustlab.systems.gfm_extraction.method import GFM, QueryBudgetExceeded, VictimService
from trustlab.systems.gfm_extraction.service import HTTPVictim, VictimServer
from trustlab.systems.gfm_extraction.tool import BudgetedVictim, extract, load_surrogate, parse_budget


class _Enc:
    """A stand-in text encoder: a fixed random embedding per text (offline, no MiniLM)."""

    dim = 16

    def encode(self, texts, normalize=True, cache=True):
        out = []
        for t in texts:
            g = torch.Generator().manual_seed(sum(map(ord, t)) % 100_000)
            out.append(torch.randn(self.dim, generator=g))
        return torch.nn.functional.normalize(torch.stack(out), dim=-1)


def _graph_folder(tmp_path, n=60):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "classes.json").write_text(json.dumps({"a": "things of kind a", "b": "things of kind b"}))
    (tmp_path / "nodes.jsonl").write_text("".join(json.dumps({"text": f"node {i}", "label": "ab"[i % 2]}) + "\n"
                                                  for i in range(n)))
    (tmp_path / "edges.csv").write_text("src,dst\n" + "".join(f"{i},{(i + 2) % n}\n{i},{(i + 7) % n}\n" for i in range(n)))
    return tmp_path


def _victim(dim=16, seed=0):
    torch.manual_seed(seed)
    return GFM("sage", dim, 32, residual=False).eval()


class CountingVictim(VictimService):
    """Counts every node embedding the tool asks for."""

    def __init__(self, model):
        super().__init__(model)
        self.asked = 0

    def embed(self, x, edge_index, nodes):
        self.asked += int(nodes.numel())
        return super().embed(x, edge_index, nodes)


def test_extract_enforces_the_budget_and_beats_the_text_prior(tmp_path):
    folder = _graph_folder(tmp_path / "g")
    v = CountingVictim(_victim())
    rep = extract(v, folder, budget=0.5, out=tmp_path / "o", eval_frac=0.2, epochs=150, hidden=32, encoder=_Enc())
    assert rep["budget"] == 30 and rep["train_queries"] == 30 and rep["eval_queries"] == 12
    assert v.asked == 42 == rep["total_queries"]
    # the surrogate learned the victim: far closer to it than the raw text embedding is, on held-out nodes
    assert rep["eval"]["cos_gain"] > 0.3 and rep["eval"]["cos_gain_lo"] > 0


def test_budgeted_victim_refuses_past_its_limit():
    model = _victim()
    x = torch.nn.functional.normalize(torch.randn(10, 16), dim=-1)
    ei = torch.zeros(2, 0, dtype=torch.long)
    b = BudgetedVictim(VictimService(model), 4)
    b.embed(x, ei, torch.arange(3))
    with pytest.raises(QueryBudgetExceeded):
        b.embed(x, ei, torch.arange(2))
    assert b.queries == 3


def test_saved_surrogate_reloads_identically(tmp_path):
    folder = _graph_folder(tmp_path / "g")
    extract(VictimService(_victim()), folder, budget=20, out=tmp_path / "o", eval_frac=0.0, epochs=5, hidden=32,
            encoder=_Enc())
    enc = load_surrogate(tmp_path / "o")
    spec = json.loads((tmp_path / "o" / "surrogate.json").read_text())
    assert spec["arch"] == "sage" and spec["residual"] is False
    from safetensors.torch import load_file

    state = load_file(tmp_path / "o" / "surrogate.safetensors")
    assert all(torch.equal(state[k], v) for k, v in enc.state_dict().items())
    with pytest.raises(UserError, match="no saved surrogate"):
        load_surrogate(tmp_path)


def test_loopback_server_round_trip_and_budget():
    model = _victim()
    x = torch.nn.functional.normalize(torch.randn(12, 16), dim=-1)
    ei = torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])
    with VictimServer(VictimService(model, budget=5)) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        client = HTTPVictim(srv.url)
        got = client.embed(x, ei, torch.arange(3))
        assert torch.allclose(got, model.embed_graph(x, ei)[:3].detach(), atol=1e-6)
        assert torch.allclose(client.embed_text(x[:2]), model.embed_text(x[:2]).detach(), atol=1e-6)
        with pytest.raises(QueryBudgetExceeded):
            client.embed(x, ei, torch.arange(3))
        with pytest.raises(UserError, match="answered 400"):
            client._post("/v1/embed", {"x": [[0.0]], "edge_index": [[0], [9]], "nodes": [0]})
    with pytest.raises(UserError, match="loopback"):
        VictimServer(VictimService(model), host="0.0.0.0")


def test_extract_over_http_equals_in_process(tmp_path):
    folder = _graph_folder(tmp_path / "g")
    kw = {"budget": 0.3, "eval_frac": 0.2, "epochs": 20, "hidden": 32, "encoder": _Enc(), "batch": 7}
    local = extract(VictimService(_victim()), folder, **kw)
    with VictimServer(VictimService(_victim())) as srv:
        remote = extract(HTTPVictim(srv.url), folder, **kw)
    assert remote["train_queries"] == local["train_queries"] == 18
    assert remote["eval"]["cos"] == pytest.approx(local["eval"]["cos"], abs=1e-4)


def test_parse_budget():
    assert parse_budget(0.1, 400) == 40 and parse_budget(40, 400) == 40
    for bad in (0, -1, 2.5, 0.001):
        with pytest.raises(UserError):
            parse_budget(bad, 100)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys):
    from trustlab.cli import main

    folder = _graph_folder(tmp_path / "g")
    cases = [
        ["extract", "--graph", str(folder), "--out", str(tmp_path / "o")],  # no victim
        ["extract", "--victim", "nomodule_xyz:f", "--graph", str(folder), "--out", str(tmp_path / "o")],
        ["extract", "--victim", "json:dumps", "--victim-url", "http://127.0.0.1:1", "--graph", str(folder),
         "--out", str(tmp_path / "o")],
        ["extract", "--victim-url", "http://127.0.0.1:9", "--graph", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
        ["extract", "--victim", "json", "--graph", str(folder), "--out", str(tmp_path / "o")],
    ]
    for argv in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err and len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)


def test_cli_help_works():
    from trustlab.cli import main

    assert main(["extract", "--help"]) == 0


def test_lab_graph_type_is_the_tool_graph():
    # the tool and the experiment share one Graph type (one code path)
    assert Graph.__module__.endswith("gfm_extraction.data")


def test_embedded_demo_assets_load(tmp_path):
    from trustlab.systems.gfm_extraction.data import graph_from_files
    from trustlab.systems.gfm_extraction.demo import DEMO_GRAPH, victim

    enc = _Enc()
    enc.dim = 384
    g = graph_from_files(DEMO_GRAPH, enc, test_frac=0.0)
    assert g.x.shape == (90, 384) and g.edge_index.shape[1] > 0 and len(g.tg.class_names) == 3
    svc = victim()
    assert svc.embed(g.x, g.edge_index, torch.arange(4)).shape == (4, 384)


def test_service_entry_point_rejects_a_bad_victim():
    from trustlab.systems.gfm_extraction.service import main

    with pytest.raises(UserError, match="MODULE:FACTORY|cannot import"):
        main(["--victim", "no_such_module_xyz:f"])


def test_http_client_sending_only_the_two_hop_neighbourhood_is_exact_for_sage():
    model = _victim()
    g = torch.Generator().manual_seed(3)
    x = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=-1)
    src = torch.arange(40)
    ei = torch.stack([torch.cat([src, (src + 1) % 40]), torch.cat([(src + 1) % 40, src])])
    full = model.embed_graph(x, ei).detach()
    with VictimServer(VictimService(model)) as srv:
        got = HTTPVictim(srv.url, hops=2).embed(x, ei, torch.tensor([3, 17, 30]))
    assert torch.allclose(got, full[[3, 17, 30]], atol=1e-5)
