"""Access control (issue 9): `access` metadata, user groups and the policy.

Unit tests of `rag_app.access`, then the real chat server with Gradio auth and two users:
one may read a restricted document, the other never gets it from the `/search` API, the
chat `ask` endpoint (sources and answer) or the compare view.
"""

from __future__ import annotations

import pytest

from rag_app import index, ingest
from rag_app.access import AccessPolicy
from rag_app.chat import BASELINE, ChatService, RetrieverChoice
from rag_app.filters import Filter, parse_filter
from rag_app.types import Chunk, Hit
from rag_app.ui.app import check_access_config, free_port, launch

SECRET = "zircon gasket ZG-99"
DOCS = {
    "engines/gasket-bulletin.md": (
        "---\ntitle: Zircon gasket bulletin\ndoc_type: bulletin\ndepartment: ENG\n"
        "access: restricted\n---\n# Zircon gasket bulletin\n\n"
        f"The {SECRET} on the fuel control unit cracks below -40 C; replace it every 300 cycles.\n"
    ),
    "policies/tools.md": (
        "---\ntitle: Tool control\ndoc_type: policy\ndepartment: QAD\naccess: internal\n---\n"
        "# Tool control\n\nEvery tool is signed out on the shadow board and returned the same "
        "shift; a missing tool grounds the aircraft until found.\n"
    ),
    "safety/fod.md": (
        "---\ntitle: FOD walk\ndoc_type: safety\ndepartment: SFO\naccess: public\n---\n"
        "# FOD walk\n\nA FOD walk of the apron is done before the first departure each day; "
        "a loose gasket or bolt goes in the FOD bin.\n"
    ),
    "stores/shelf-life.md": (
        "---\ntitle: Shelf life\ndoc_type: policy\ndepartment: Stores\n---\n"
        "# Shelf life\n\nGaskets and sealants past their shelf life are tagged red and moved "
        "to bay R1.\n"
    ),
}
POLICY = {"internal": ["*"], "restricted": ["engineering"]}
GROUPS = {"ana": ["engineering"], "bo": ["stores"]}
AUTH = ["ana:ana-pw", "bo:bo-pw"]


def _chunk(access=None, cid="c1") -> Chunk:
    meta = {} if access is None else {"access": access}
    return Chunk(cid, f"{cid}.md", "text", metadata=meta)


# --- the policy ---------------------------------------------------------------------------


def test_policy_rules():
    policy = AccessPolicy(POLICY, GROUPS)
    assert policy.enforced
    for user in ("ana", "bo", "nobody", None):
        assert policy.can_read(user, {})  # no access value: everyone
        assert policy.can_read(user, {"access": "public"})
        assert policy.can_read(user, {"access": "PUBLIC"})
    assert policy.can_read("ana", {"access": "restricted"})
    assert policy.can_read("ana", {"access": "Restricted"})  # values are case-insensitive
    assert not policy.can_read("bo", {"access": "restricted"})
    assert policy.can_read("bo", {"access": "internal"})  # "*": any logged-in user
    assert not policy.can_read(None, {"access": "internal"})
    assert not policy.can_read("ana", {"access": "secret"})  # not in the policy: nobody
    # a list needs every value readable
    assert policy.can_read("ana", {"access": ["internal", "restricted"]})
    assert not policy.can_read("bo", {"access": ["internal", "restricted"]})
    assert not policy.can_read("ana", {"access": {"nested": "x"}})


def test_no_policy_enforces_nothing():
    policy = AccessPolicy({}, GROUPS)
    assert not policy.enforced
    assert policy.can_read(None, {"access": "restricted"})
    assert policy.filter_for("bo", ["restricted"]) is None
    base = parse_filter("department=ENG")
    assert policy.filter_for("bo", ["restricted"], base) is base


def test_filter_for_user_is_anded_with_their_filter():
    policy = AccessPolicy(POLICY, GROUPS)
    values = ["internal", "public", "restricted", "secret"]
    assert str(policy.filter_for("ana", values)) == "access!=secret"
    bo = policy.filter_for("bo", values, parse_filter("department=ENG"))
    assert isinstance(bo, Filter)
    assert str(bo) == "department=ENG AND access!=restricted,secret"
    assert bo.matches({"department": "ENG"})  # no access value
    assert bo.matches({"department": "ENG", "access": "internal"})
    assert not bo.matches({"department": "ENG", "access": "restricted"})
    assert not bo.matches({"department": "QAD"})
    # the filter only sees scalar values; `visible` checks the raw metadata too
    hits = [Hit(_chunk(["restricted"], "a")), Hit(_chunk("public", "b")), Hit(_chunk(None, "c"))]
    assert [h.chunk.id for h in policy.visible("bo", hits)] == ["b", "c"]
    assert [h.chunk.id for h in policy.visible("ana", hits)] == ["a", "b", "c"]


def test_policy_without_login_is_refused(settings_factory):
    with pytest.raises(ValueError, match=r"server\.auth is empty"):
        settings_factory(server={"access_policy": POLICY})
    ok = settings_factory(server={"access_policy": POLICY, "auth": AUTH, "groups": GROUPS})
    assert ok.server.groups["ana"] == ["engineering"]
    # settings built around validation (model_copy) are still refused at start
    broken = ok.model_copy(update={"server": ok.server.model_copy(update={"auth": []})})
    with pytest.raises(ValueError, match="refuses to start"):
        check_access_config(broken)
    with pytest.raises(ValueError, match="refuses to start"):
        launch(broken, block=False)


# --- through the chat server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def access_settings(tmp_path_factory):
    from rag_app.config import load_settings

    root = tmp_path_factory.mktemp("access")
    corpus = root / "corpus"
    for rel, text in DOCS.items():
        (corpus / rel).parent.mkdir(parents=True, exist_ok=True)
        (corpus / rel).write_text(text)
    settings = load_settings(
        workspace=root / "ws",
        corpus=corpus,
        llm={"backend": "none"},
        retrieval={"rerank": False},
        server={"port": free_port(), "auth": AUTH, "groups": GROUPS, "access_policy": POLICY},
    )
    ingest.run(settings, progress=False)
    index.run(settings, progress=False)
    return settings


@pytest.fixture(scope="module")
def access_server(access_settings):
    demo, url = launch(access_settings, block=False)
    yield url
    demo.close()


def test_service_filters_before_retrieval(access_settings):
    service = ChatService(access_settings, load_llm=False)
    for mode in ("bm25", "dense", "hybrid"):
        choice = RetrieverChoice.of(BASELINE, mode, False)
        ana = service.search(SECRET, choice, user="ana", k=10)
        bo = service.search(SECRET, choice, user="bo", k=10)
        assert ana[0].chunk.doc_id == "engines/gasket-bulletin.md"
        assert "engines/gasket-bulletin.md" not in {h.chunk.doc_id for h in bo}
        if mode != "bm25":  # BM25 returns only documents sharing a term
            assert len(bo) == 3  # every other document still competes
    assert service.filter_values(("department",), user="bo")["department"] == [
        "QAD",
        "SFO",
        "Stores",
    ]
    assert "ENG" in service.filter_values(("department",), user="ana")["department"]


def _ask(client, args) -> tuple[list, str]:
    """The chat endpoint streams: the final history, and the sources it showed."""
    job = client.submit(*args, api_name="/ask")
    history = job.result()[0]
    sources = "".join(out[2] for out in job.outputs() if isinstance(out[2], str))
    return history, sources


def test_two_users_through_the_ui_api(access_server):
    from gradio_client import Client

    ana = Client(access_server, auth=("ana", "ana-pw"), verbose=False)
    bo = Client(access_server, auth=("bo", "bo-pw"), verbose=False)

    for mode in ("hybrid", "dense", "bm25"):
        seen = ana.predict(SECRET, BASELINE, mode, False, api_name="/search")
        assert seen[0]["doc_id"] == "engines/gasket-bulletin.md"
        hidden = bo.predict(SECRET, BASELINE, mode, False, api_name="/search")
        assert all(h["doc_id"] != "engines/gasket-bulletin.md" for h in hidden)
        assert all("ZG-99" not in h["text"] for h in hidden)
        if mode != "bm25":  # "internal" is readable by any logged-in user
            assert "policies/tools.md" in {h["doc_id"] for h in hidden}

    # the chat: sources and the (retrieval-only) answer
    question = f"when is the {SECRET} replaced?"
    args = (question, [], BASELINE, "hybrid", False, None, None, None, "", "")
    history, sources = _ask(ana, args)
    assert "gasket-bulletin.md" in sources and "ZG-99" in str(history[-1]["content"])
    history, sources = _ask(bo, args)
    answer = str(history[-1]["content"])
    assert "gasket-bulletin.md" not in sources and "ZG-99" not in sources
    assert "ZG-99" not in answer and "300 cycles" not in answer
    assert "shelf-life.md" in sources or "fod.md" in sources


def test_anonymous_requests_are_refused(access_server):
    from gradio_client import Client

    with pytest.raises(Exception):  # noqa: B017 - gradio_client raises several types
        Client(access_server, verbose=False).predict(SECRET, api_name="/search")


# --- the policy's home (issue 30) ------------------------------------------------------------


def test_list_valued_access_as_the_index_stores_it():
    policy = AccessPolicy(POLICY, GROUPS)
    # ingest keeps a list as "internal,restricted" (Chroma holds scalars): every part counts
    assert policy.can_read("ana", {"access": "internal,restricted"})
    assert not policy.can_read("bo", {"access": "internal,restricted"})
    assert policy.denied_values("bo", ["internal,restricted", "internal"]) == [
        "internal,restricted"
    ]


def test_the_policy_travels_with_the_workspace(access_settings, tmp_path, monkeypatch):
    """Started from another folder (no rag-app.toml, no policy in the settings), the chat
    still enforces the policy the corpus was ingested under, and refuses to start without
    a login to enforce it with."""
    from rag_app.access import POLICY_FILE
    from rag_app.config import load_settings

    assert (access_settings.workspace / POLICY_FILE).is_file()
    monkeypatch.chdir(tmp_path)
    elsewhere = load_settings(
        workspace=access_settings.workspace,
        corpus=access_settings.corpus,
        llm={"backend": "none"},
        server={"port": free_port()},
    )
    assert not elsewhere.server.access_policy
    service = ChatService(elsewhere, load_llm=False)
    assert service.access.enforced
    hits = service.search(SECRET, RetrieverChoice.of(BASELINE, "hybrid", False), user=None, k=10)
    assert "engines/gasket-bulletin.md" not in {h.chunk.doc_id for h in hits}
    with pytest.raises(ValueError, match=r"access-policy\.json"):
        launch(elsewhere, block=False)
