"""GET /v1/duplicates as a user meets it: `shiwu index` over real photos with an exact copy, a
grayscale copy and crops, `shiwu serve --index --api-key` on a loopback port, and the groups'
tiers (exact / near / similar) in the JSON, with thumbnails for every photo of a group."""

from pathlib import Path

import httpx
import pytest

from support.duplicates import AUTH, KEY, SERVE, dupes_index, dupes_server, library  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def client(dupes_server):
    with httpx.Client(base_url=dupes_server.url, timeout=120, headers=AUTH) as c:
        yield c


def groups(client, **params) -> dict[frozenset, tuple[str, dict]]:
    """{names of a group: (its tier, {name: match})}."""
    answer = client.get("/v1/duplicates", params=params)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["index"]["rows"] == 9 and body["tier"] == params.get("tier", "similar")
    out = {}
    for group in body["groups"]:
        names = [Path(i["path"]).name for i in group["images"]]
        out[frozenset(names)] = (group["tier"], dict(zip(names, (i["match"] for i in group["images"]))))
    return out


@pytest.mark.slow
def test_the_default_similar_tier_tells_exact_near_and_similar_copies_apart(client):
    found = groups(client)
    coffee = found[frozenset({"coffee.jpg", "coffee copy.jpg"})]
    assert coffee[0] == "exact" and sorted(coffee[1].values(), key=str) == [None, "exact"]
    assert found[frozenset({"chelsea.jpg", "chelsea_gray.jpg"})] == (
        "near", {"chelsea.jpg": None, "chelsea_gray.jpg": "near"})  # the larger colour file first
    assert found[frozenset({"rocket.jpg", "rocket_crop.jpg"})] == (
        "similar", {"rocket.jpg": None, "rocket_crop.jpg": "similar"})
    assert not any("camera.jpg" in names for names in found)


def test_tier_chooses_how_loose_a_tie_is_reported(client):
    assert {names: tier for names, (tier, _) in groups(client, tier="exact").items()} == {
        frozenset({"coffee.jpg", "coffee copy.jpg"}): "exact"}
    assert {names: tier for names, (tier, _) in groups(client, tier="near").items()} == {
        frozenset({"coffee.jpg", "coffee copy.jpg"}): "exact",
        frozenset({"chelsea.jpg", "chelsea_gray.jpg"}): "near"}


def test_threshold_moves_the_similar_tier(client):
    strict = groups(client, threshold=0.97)  # the crops are 0.91-0.94 alike: neither joins
    assert sorted(tier for tier, _ in strict.values()) == ["exact", "near"]
    loose = groups(client, threshold=0.85)   # both join
    assert loose[frozenset({"astronaut.jpg", "astronaut_crop.jpg"})][0] == "similar"
    assert loose[frozenset({"rocket.jpg", "rocket_crop.jpg"})][0] == "similar"


def test_every_photo_of_a_group_has_its_thumbnail(client):
    body = client.get("/v1/duplicates", params={"tier": "near"}).json()
    images = [image for group in body["groups"] for image in group["images"]]
    assert len(images) == 4
    for image in images:
        thumb = client.get(image["thumbnail"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert image["thumbnail"] == f"/v1/thumbnails/{image['id']}"


def test_it_needs_the_api_key_and_refuses_bad_parameters_by_name(dupes_server, client):
    bare = httpx.get(dupes_server.url + "/v1/duplicates", timeout=30)
    assert bare.status_code == 401 and "API key" in bare.json()["detail"]
    bad_tier = client.get("/v1/duplicates", params={"tier": "fuzzy"})
    assert bad_tier.status_code == 422 and "tier" in bad_tier.text
    assert client.get("/v1/duplicates", params={"threshold": 1.5}).status_code == 422


def test_the_api_docs_describe_the_answer(client):
    spec = client.get("/openapi.json").json()
    route = spec["paths"]["/v1/duplicates"]["get"]
    assert {"200", "401", "409", "413", "503"} <= set(route["responses"])
    image = spec["components"]["schemas"]["DuplicateImage"]["properties"]
    assert {"path", "size", "match", "id", "thumbnail"} <= set(image)
