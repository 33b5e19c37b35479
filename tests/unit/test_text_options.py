"""Options written as text (URL query, form fields, SageMaker custom attributes): typed per
option, numbers only as people write them."""

from __future__ import annotations

import pytest

from stygig.errors import InvalidOptionsError
from stygig.recommendation import options_from_params, params_to_dict


def test_text_numbers_are_read_per_option() -> None:
    got = params_to_dict(
        [("k", "3"), ("k_total", "12"), ("diversity", ".5"), ("use_color", "no"), ("seed", "-1")]
    )
    assert got == {"k": 3, "k_total": 12, "diversity": 0.5, "use_color": False, "seed": -1}
    assert options_from_params([("k", "2"), ("diversity", "0.25")]).k == 2


@pytest.mark.parametrize("text", ["1_0", "\u0663", " 3", "3 ", "+3", "3.0", "1e3", "", "9" * 19])
def test_an_integer_option_takes_ascii_digits_only(text: str) -> None:
    """Python's int() reads "1_0" as 10, Arabic-Indic digits and padded text: all refused."""
    with pytest.raises(InvalidOptionsError, match="k must be an integer"):
        params_to_dict([("k", text)])


@pytest.mark.parametrize(
    "text", ["nan", "inf", "-inf", "1_0.5", "0,5", "\u0660.5", "1e", "e-3", ".", "1e-3 ", "1e+1234"]
)
def test_a_number_option_takes_plain_decimals_only(text: str) -> None:
    with pytest.raises(InvalidOptionsError, match="diversity must be a number"):
        params_to_dict([("diversity", text)])


@pytest.mark.parametrize(("text", "value"), [("1e-1", 0.1), ("2.5E-1", 0.25), ("5.", 5.0)])
def test_a_number_option_takes_what_json_takes(text: str, value: float) -> None:
    """Review (s40): ``diversity=1e-1`` was refused in the query string and taken in JSON."""
    assert params_to_dict([("diversity", text)]) == {"diversity": value}


def test_custom_attributes_pass_over_what_is_not_an_option() -> None:
    """SageMaker passes the header on as the caller wrote it, and callers put trace ids in it
    (its own documented example): a bare word or an empty value is passed over, and a long
    one (``stygig jobs submit`` with 100 ids) is read whole (review, session 40: refusing
    them broke both)."""
    from stygig.serving.requests import custom_attributes

    assert custom_attributes("k=3&mode=similar") == [("k", "3"), ("mode", "similar")]
    assert custom_attributes("c000b4f9-df62-4c85-a0bf-7c525f9104a4") == []
    assert custom_attributes("k=3&trace&x=") == [("k", "3")]
    # Review (s41): a caller's own key=value (a trace id, JumpStart's accept_eula) was a 422,
    # and pairs joined by ';' were read as one value of k
    assert custom_attributes("trace_id=c000b4f9&accept_eula=true") == []
    assert custom_attributes("k=2;trace_id=abc; mode=similar") == [("k", "2"), ("mode", "similar")]
    ids = ",".join(f"sku-{n:04d}" for n in range(100))
    assert options_from_params(custom_attributes(f"exclude_ids={ids}")).exclude_ids == tuple(
        ids.split(",")
    )


def test_a_list_at_its_bound_may_end_with_a_comma() -> None:
    """Review (s40): counted from the commas, a list of exactly 1,000 ids with a trailing comma
    was "more than 1,000"; one of 1,001 is still refused before it is split."""
    from stygig.recommendation import MAX_EXCLUDE_IDS, split_text_list

    ids = [f"x{n}" for n in range(MAX_EXCLUDE_IDS)]
    assert split_text_list([",".join(ids) + ","], "exclude_ids", MAX_EXCLUDE_IDS) == ids
    with pytest.raises(InvalidOptionsError, match="exclude_ids: at most 1,000 values"):
        split_text_list([",".join(ids) + ",x"], "exclude_ids", MAX_EXCLUDE_IDS)


def test_a_browser_page_of_another_origin_is_told_apart() -> None:
    """Review of session 41's fixes (6): a body without a type is read from its bytes for SDKs
    and CLIs, never for a browser page elsewhere (it posts such bodies with no preflight)."""
    from stygig.serving.requests import from_another_site

    assert not from_another_site({"host": "127.0.0.1:8080"})  # boto3, curl, SageMaker
    assert not from_another_site({"host": "a:1", "origin": "http://a:1"})
    assert not from_another_site({"host": "a:1", "sec-fetch-site": "same-origin"})
    assert not from_another_site({"host": "a:1", "sec-fetch-site": "none"})  # typed by hand
    assert from_another_site({"host": "a:1", "origin": "http://b:1"})
    assert from_another_site({"host": "a:1", "origin": "http://a:2"})
    assert from_another_site({"host": "a:1", "origin": "null"})
    assert from_another_site({"host": "a:1", "sec-fetch-site": "same-site"})
    assert from_another_site(
        {"host": "a:1", "sec-fetch-site": "cross-site", "origin": "http://a:1"}
    )


# -- review, session 42: nothing given twice is "the last one wins" -----------------------------


@pytest.mark.parametrize(
    ("name", "values"),
    [("k", ["2", "5"]), ("mode", ["similar", "outfit"]), ("filters", ["{}", "{}"])],
)
def test_a_single_valued_option_repeated_in_text_is_refused(name: str, values: list[str]) -> None:
    """``?k=2&k=5`` ran with k=5; ``?mode=similar&mode=outfit`` with outfit."""
    with pytest.raises(InvalidOptionsError, match=f"{name} is given 2 times") as refused:
        params_to_dict([(name, v) for v in values])
    assert refused.value.code == "duplicate_key"


def test_a_list_option_may_be_repeated_as_documented() -> None:
    got = params_to_dict([("exclude_ids", "a,b"), ("exclude_ids", "c")])
    assert got == {"exclude_ids": ["a", "b", "c"]}


def test_a_key_given_twice_in_a_json_object_is_refused_naming_it() -> None:
    from stygig.recommendation import parse_json_object

    for body, key in (
        (b'{"item_ids": ["a"], "k": 2, "k": 5}', "k"),
        (b'{"item_ids": ["a"], "item_ids": ["b"]}', "item_ids"),
    ):
        with pytest.raises(InvalidOptionsError) as refused:
            parse_json_object(body)
        assert refused.value.code == "duplicate_key"
        assert f"the key {key!r} is given twice in the body" in refused.value.message
    # A key of the client's own (a filter's, an unknown one) is never repeated back (review
    # of session 42's fixes: '<script>...' came back in the message).
    for body in (
        b'{"filters": {"price": {"min": 1, "min": 2}}}',
        b'{"filters": {"SECRET-<b>x</b>": 1, "SECRET-<b>x</b>": 2}}',
        b'{"item_ids": ["a"], "<script>": 1, "<script>": 2}',
    ):
        with pytest.raises(InvalidOptionsError) as refused:
            parse_json_object(body)
        assert refused.value.code == "duplicate_key"
        assert refused.value.message == "a key is given twice in the body; give it once"
    with pytest.raises(InvalidOptionsError, match="given twice"):
        params_to_dict([("filters", '{"a": 1, "a": 2}')])
    long = "x" * 5000  # not a key a request holds: not named
    with pytest.raises(InvalidOptionsError) as refused:
        parse_json_object(f'{{"{long}": 1, "{long}": 2}}'.encode())
    assert "x" not in refused.value.message.replace("body", "")


def test_an_option_in_two_places_is_refused_naming_both() -> None:
    """Review, session 42: the query string silently beat the custom attributes, lists from
    both were united, and a body replaced them."""
    from stygig.serving.requests import outside_options, parse_image_body, parse_json_body

    body = b'{"item_ids": ["a"], "k": 2}'
    for header, query, places in (
        ("k=2", [("k", "5")], ("the custom attributes", "the query string")),
        ("include_categories=bag", [("include_categories", "shoes")], ("custom", "query")),
        ("", [("k", "5")], ("the query string", "the body")),
        ("k=5", [], ("the custom attributes", "the body")),
    ):
        with pytest.raises(InvalidOptionsError) as refused:
            if places[1] == "the body":
                parse_json_body(body, outside_options(header, query))
            else:
                parse_image_body(b"photo", outside_options(header, query))
        assert refused.value.code == "option_given_twice"
        message = refused.value.message
        assert message.startswith("'") and all(p in message for p in places), message
    # each option given once, wherever: all of them kept, as before
    parsed = parse_json_body(body, outside_options("mode=similar", [("use_color", "false")]))
    assert (parsed.options.k, parsed.options.mode, parsed.options.use_color) == (
        2,
        "similar",
        False,
    )


def test_a_blank_option_in_the_custom_attributes_is_refused_as_in_the_query_string() -> None:
    """Review, session 42: ``k=`` in the custom attributes was passed over (a 422 in the query
    string)."""
    from stygig.serving.requests import custom_attributes

    assert custom_attributes("k=&trace") == [("k", "")]
    for text in ("k=", "use_color"):
        with pytest.raises(InvalidOptionsError):
            options_from_params(custom_attributes(text))
        with pytest.raises(InvalidOptionsError):
            options_from_params([(text.partition("=")[0], "")])


@pytest.mark.parametrize("name", ["exclude_ids", "include_categories", "candidate_ids"])
def test_a_bare_string_is_no_list_in_json(name: str) -> None:
    """Review, session 42: ``"exclude_ids": "sku-1"`` was read as ``["sku-1"]`` though the
    schema says array (``POST /v1/outfits/score`` refused it)."""
    from stygig.recommendation import Options, split_json_request

    with pytest.raises(InvalidOptionsError, match=f"{name} must be a list"):
        Options.from_dict({name: "sku-1"})
    assert Options.from_dict({name: ["sku-1"]})
    with pytest.raises(InvalidOptionsError, match="item_ids must be a list"):
        split_json_request({"item_ids": "sku-1"})


def test_a_range_filter_whose_min_is_above_its_max_is_refused() -> None:
    """Review, session 42: ``{"min": 50, "max": 10}`` was taken and matched nothing."""
    from stygig.recommendation import Options

    with pytest.raises(InvalidOptionsError, match="filters: a range filter's min is above"):
        Options(filters={"price": {"min": 50, "max": 10}})
    assert Options(filters={"price": {"min": 10, "max": 10}})


def test_an_unknown_name_in_two_places_is_an_unknown_option_not_repeated_back() -> None:
    """Review of session 42's fixes: a name given in the query string and the body was
    "given twice" and repeated back, even an unknown one ('<script>...'); an unknown option
    is refused as one, never named."""
    from stygig.serving.requests import parse_json_body

    body = b'{"item_ids": ["a"], "<script>alert(1)</script>": 1}'
    with pytest.raises(InvalidOptionsError) as refused:
        parse_json_body(body, [("the query string", {"<script>alert(1)</script>": "1"})])
    assert refused.value.code == "invalid_options"
    assert "script" not in refused.value.message and "unknown option" in refused.value.message


@pytest.mark.parametrize(
    ("accept", "taken"),
    [
        ("application/json", True),
        ("text/html, application/json;q=0.1", True),
        ("*/*", True),
        ("application/*;q=0.5", True),
        ("APPLICATION/JSON; Q=0.001", True),
        ("application/json;q=1.000, text/html", True),
        # Java's HttpURLConnection (review, s47: q=.2 was read as 0)
        ("text/html, image/gif, image/jpeg, *; q=.2, */*; q=.2", True),
        ("application/json;q=.5", True),
        ("application/json;q=0.0001", True),
        ("text/html", False),
        # Audit, session 47: the most specific range decides (RFC 9110 12.5.1), q is named
        # in any case, and a q outside 0-1 is no quality.
        ("application/json;q=0, */*", False),
        ("application/*;q=0, */*;q=1", False),
        ("*/*;q=0.5, application/json;q=0", False),
        ("APPLICATION/JSON;Q=0", False),
        ("application/json;q=2", False),
        ("application/json;q=abc", False),
        ("application/json;q=0, application/*;q=1", False),
    ],
)
def test_accept_is_read_as_the_rfc_says(accept: str, taken: bool) -> None:
    from stygig.errors import NotAcceptableError
    from stygig.serving.requests import check_accept

    if taken:
        check_accept(accept)
    else:
        with pytest.raises(NotAcceptableError):
            check_accept(accept)


@pytest.mark.parametrize("name", ["include_categories", "exclude_categories", "candidate_ids"])
def test_a_list_option_that_is_a_set_takes_each_value_once(name: str) -> None:
    # Audit, session 47: 256 copies of "top" in include_categories were taken.
    from stygig.recommendation import Options

    with pytest.raises(InvalidOptionsError, match=f"{name}: .*each value at most once"):
        Options.from_dict({name: ["top", "jeans", "top"]})
    assert getattr(Options.from_dict({name: ["top", "jeans"]}), name) == ("top", "jeans")


def test_json_is_utf8_and_counted_after_a_byte_order_mark() -> None:
    """A body opening with a UTF-8 byte order mark, or in UTF-16/32 (which json.loads of bytes
    reads), skipped the value count: 5.7 MB of [{},{},...] cost a second of CPU and 130 MB
    where the same without the mark is a 413 at once (review, session 50)."""
    from stygig.errors import InputError, PayloadTooLargeError
    from stygig.recommendation import MAX_JSON_VALUES, parse_json_object

    many = b"[" + b"{}," * MAX_JSON_VALUES + b"{}]"
    for body in (many, b"\xef\xbb\xbf" + many, b"\xef\xbb\xbf \n" + many):
        with pytest.raises(PayloadTooLargeError):
            parse_json_object(body)
    text = '{"item_ids": ["a"]}'
    assert parse_json_object(b"\xef\xbb\xbf" + text.encode()) == {"item_ids": ["a"]}
    for body in (
        text.encode("utf-16"),  # with its mark
        text.encode("utf-16-le"),
        text.encode("utf-32"),
        many.decode().encode("utf-16"),
        b'{"item_ids": ["\xed\xa0\x80"]}',  # a surrogate's bytes (CESU-8): no UTF-8
    ):
        with pytest.raises(InputError) as refused:
            parse_json_object(body)
        assert refused.value.http_status == 400 and refused.value.code == "malformed_json"


@pytest.mark.parametrize(
    ("accept", "label"),
    [
        (None, "application/json"),
        ("application/jsonlines", "application/jsonlines"),
        ("application/x-jsonlines;q=0.9, text/csv", "application/x-jsonlines"),
        ("application/json;q=0.5, application/jsonl", "application/jsonl"),
        ("application/json, application/jsonlines", "application/json"),
        ("application/jsonlines;q=0.5, */*", "application/json"),
        ("application/jsonlines;q=0, */*", "application/json"),
    ],
)
def test_json_lines_in_accept_labels_the_same_answer(accept: str | None, label: str) -> None:
    """Review, session 53: a batch transform over .jsonl asks for application/jsonlines; it
    was a 406. The answer, one JSON object on one line, is a JSON Lines record; it is labelled
    with the type the client prefers."""
    from stygig.serving.requests import check_accept

    assert check_accept(accept) == label


def test_json_lines_ruled_out_with_json_is_406() -> None:
    from stygig.errors import NotAcceptableError
    from stygig.serving.requests import check_accept

    with pytest.raises(NotAcceptableError, match="JSON Lines"):
        check_accept("application/jsonlines;q=0, text/csv")


def test_base64_wrapped_as_mime_wraps_it_is_read() -> None:
    """Review, session 53: the base64 command, Python's encodebytes and the MIME encoders of
    Ruby and Java break lines every 76 characters: refused as invalid base64 before."""
    import base64

    from stygig.errors import InvalidImageError
    from stygig.recommendation import split_json_request

    photo = bytes(range(256)) * 3
    for wrapped in (
        base64.encodebytes(photo).decode(),
        base64.encodebytes(photo).decode().replace("\n", "\r\n"),
    ):
        assert "\n" in wrapped
        images, _, _ = split_json_request({"image_b64": wrapped})
        assert images == [photo]
    spaced = base64.b64encode(photo).decode().replace("A", " A")
    with pytest.raises(InvalidImageError, match="not valid base64"):
        split_json_request({"image_b64": spaced})  # other characters stay refused


@pytest.mark.parametrize("key", ["image_uri", "image_uris"])
def test_a_stored_photo_outside_an_async_input_says_where_it_is_read(key: str) -> None:
    """Review, session 53: on /invocations image_uri was "a query needs at least one photo"
    alone and "unknown option" beside item ids."""
    from stygig.recommendation import split_json_request

    value = "/etc/passwd" if key == "image_uri" else ["/etc/passwd"]
    for data in ({key: value}, {key: value, "item_ids": ["a"]}):
        with pytest.raises(InvalidOptionsError, match="only asynchronous jobs") as e:
            split_json_request(data)
        assert "passwd" not in str(e.value)
    _, _, rest = split_json_request({key: value}, locations=True)  # an async job's input
    assert rest == {key: value}


@pytest.mark.parametrize(
    ("value", "warned"),
    [(None, False), ("SINGLE_RECORD", False), ("MULTI_RECORD", True), ("MultiRecord", True)],
)
def test_a_multi_record_batch_strategy_is_warned_of(
    monkeypatch: pytest.MonkeyPatch, value: str | None, warned: bool
) -> None:
    """Review, session 53: SAGEMAKER_BATCH_STRATEGY=MULTI_RECORD started without a word, and
    a line-split transform job then failed on every request."""
    from stygig.serving.command import batch_strategy_note

    if value is None:
        monkeypatch.delenv("SAGEMAKER_BATCH_STRATEGY", raising=False)
    else:
        monkeypatch.setenv("SAGEMAKER_BATCH_STRATEGY", value)
    note = batch_strategy_note()
    assert (note is not None) == warned
    if note is not None:
        assert "SingleRecord" in note
