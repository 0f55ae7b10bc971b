"""Properties of the store URL parser: `SESSIONKIT_URL` is text from the environment.

Whatever the text, `open_store` answers with a store set as the URL says, or a
`ConfigError` whose `option` names the part at fault (one bad option value among
good ones is refused by its name); options put in the query come back exactly;
a repeated option is refused; no error shows the password. No store is
used here: constructing one must not touch the network (sockets are made to fail
loudly) and a ``file://`` store's directories are never really made.
"""

from __future__ import annotations

import math
import os
import pathlib
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import pytest
from hypothesis import event, example, given, reject
from hypothesis import strategies as st

import sessionkit.backends.file as file_backend
from sessionkit import ConfigError
from sessionkit.backends import _BACKENDS, open_store
from sessionkit.backends.memcache import MemcacheStore
from sessionkit.backends.memory import MemoryStore
from sessionkit.backends.redis import RedisStore
from sessionkit.config import StoreURL, _parse_hosts, parse_duration, parse_secret_keys

from . import punctuation, surrogates, wild_chars, wild_text

# -- no disk, no network -----------------------------------------------------------------


class _NoDiskPath(type(pathlib.Path())):  # type: ignore[misc]
    """A path whose `mkdir` makes nothing: the fuzzer names arbitrary directories, and we run as root.

    It still encodes the path as `os.mkdir` would first, so a path the OS
    cannot be given fails exactly as it would for real.
    """

    def mkdir(self, mode: int = 0o777, parents: bool = False, exist_ok: bool = False) -> None:
        os.fsencode(self)


def _no_network(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("constructing a store must not touch the network")


@pytest.fixture(scope="module", autouse=True)
def _sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(file_backend, "Path", _NoDiskPath)
        patch.setattr(socket.socket, "connect", _no_network)
        patch.setattr(socket.socket, "connect_ex", _no_network)
        patch.setattr(socket, "create_connection", _no_network)
        patch.setattr(socket, "getaddrinfo", _no_network)
        # Guard the guard: if FileStore ever makes directories some other way, stop before fuzzing.
        probe = tmp_path_factory.mktemp("probe") / "would-be-made"
        file_backend.FileStore(str(probe)).close()
        if probe.exists():
            pytest.fail("FileStore made a directory past the patched Path.mkdir: fuzzing file:// would write to disk")
        yield


# -- strategies --------------------------------------------------------------------------

OPTION_NAMES = [
    "prefix", "ttl", "timeout", "connect_timeout", "retries", "max_connections", "health_check_interval", "db",
    "tls", "ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname", "service",
    "fsync", "max_entries", "max_item_size", "dead_timeout", "encrypt", "compress", "split", "revoke",
]
ODD_VALUES = [
    "", "0", "1", "-1", "1.5", "0.0001", "1e308", "1e400", "nan", "inf", "-inf", "true", "FALSE", "yes", "off",
    "required", "none", "optional", "\u00b2", "\u0663", "9" * 5000, " 1 ", "0x10", "1_000", "%ff", "%00", "%",
    "%C2%B2", "session:", "a b", "\u00e9", "memory://", "cookie://", "redis://h/0", "memcache%3A%2F%2Fh",
]

#: Text for inside a URL; percent-escaped when it is surrogate-free, raw otherwise.
escaped_text = st.text(wild_chars, max_size=12).map(lambda text: quote(text, safe="", errors="surrogatepass"))
raw_text = st.text(wild_chars, max_size=12)
url_text = escaped_text | raw_text

schemes = st.one_of(
    st.sampled_from(sorted(_BACKENDS)),
    st.sampled_from(sorted(_BACKENDS)).map(str.upper),
    st.sampled_from(["http", "redis+", "x-y.z", "", "1redis", "memory:"]),
    st.from_regex(r"[a-zA-Z][a-zA-Z0-9+.-]{0,10}", fullmatch=True),
    st.text(wild_chars, max_size=8),
)
hostnames = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,15}[a-z0-9])?(\.[a-z0-9-]{1,10}){0,3}", fullmatch=True)
hosts = st.one_of(
    hostnames,
    st.sampled_from(["localhost", "", "127.0.0.1", "[::1]", "[::1%25eth0]", "[", "]", "h]", "[::1]x"]),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda address: f"[{address}]"),
    url_text,
)
ports = st.one_of(
    st.none(),
    st.integers(-5, 70_000).map(str),
    st.sampled_from(["", "0", "65535", "65536", "\u00b2", "\u0663", "abc", "99999999999999999999", " 1"]),
)
host_lists = st.lists(
    st.builds(lambda host, port: host if port is None else f"{host}:{port}", hosts, ports), min_size=0, max_size=3
).map(",".join)
userinfos = st.one_of(
    st.just(""),
    st.builds(lambda user: f"{user}@", url_text),
    st.builds(lambda user, password: f"{user}:{password}@", url_text, url_text),
)
path_segments = st.one_of(
    st.sampled_from(["0", "15", "mymaster", "\u00b2", "%C2%B2", "\u0663", "..", "%2e%2e", "", "%00", "%", "%zz"]),
    url_text,
)
paths = st.one_of(st.just(""), st.lists(path_segments, max_size=4).map(lambda segments: "/" + "/".join(segments)))
option_pairs = st.one_of(
    st.builds(lambda name, value: f"{name}={value}", st.sampled_from(OPTION_NAMES) | url_text,
              st.sampled_from(ODD_VALUES) | url_text),
    url_text,  # a bare name, or junk
)
queries = st.one_of(
    st.just(""),
    st.lists(option_pairs, max_size=5).map(lambda pairs: "?" + "&".join(pairs)),
)
fragments = st.one_of(st.just(""), st.just("#"), url_text.map(lambda text: "#" + text))
url_shaped = st.builds(
    lambda scheme, slashes, userinfo, host_list, path, query, fragment: (
        f"{scheme}:{slashes}{userinfo}{host_list}{path}{query}{fragment}"),
    schemes, st.sampled_from(["//", "//", "/", "", "///"]), userinfos, host_lists, paths, queries, fragments,
)

# Mostly well-formed: a registered scheme, real hosts and ports, known options with odd values,
# so that most URLs get past the parser into each backend's own checks.
_good_hosts = st.one_of(
    hostnames, st.just("localhost"), st.ip_addresses(v=4).map(str), st.ip_addresses(v=6).map(lambda a: f"[{a}]"))
_good_host_lists = st.lists(
    st.builds(lambda host, port: host if port is None else f"{host}:{port}",
              _good_hosts, st.none() | st.integers(1, 65535)),
    max_size=3,
).map(",".join)
_good_segments = st.sampled_from(["0", "15", "mymaster", "\u00b2", "%C2%B2", "\u0663", "..", ""]) | escaped_text
_good_paths = st.one_of(
    st.sampled_from(["", "/", "/0", "/15", "/mymaster", "/mymaster/2", "/run/redis.sock", "/var/lib/sessions"]),
    st.lists(_good_segments, min_size=1, max_size=3).map(lambda segments: "/" + "/".join(segments)),
)
_good_queries = st.lists(
    st.tuples(st.sampled_from(OPTION_NAMES), st.sampled_from(ODD_VALUES) | escaped_text),
    max_size=4, unique_by=lambda pair: pair[0],
).map(lambda pairs: "?" + "&".join(f"{name}={value}" for name, value in pairs) if pairs else "")
mostly_good_urls = st.builds(
    lambda scheme, userinfo, host_list, path, query: f"{scheme}://{userinfo}{host_list}{path}{query}",
    st.sampled_from(sorted(_BACKENDS)),
    st.sampled_from(["", "", "user@", "user:pw@", ":pw@", "u%40x:p%3Aw@"]),
    _good_host_lists, _good_paths, _good_queries,
)


def _splice(url: str, junk: str, position: int) -> str:
    position %= len(url) + 1
    return url[:position] + junk + url[position:]


urls = st.one_of(
    mostly_good_urls,
    mostly_good_urls,
    url_shaped,
    st.builds(_splice, mostly_good_urls | url_shaped,
              st.text(wild_chars | punctuation | surrogates, min_size=1, max_size=3), st.integers(min_value=0)),
)


# -- what open_store must answer ----------------------------------------------------------

#: What a `ConfigError` may name besides an option of the query: a part of the URL itself.
_URL_PARTS = {"url", "scheme", "host", "path", "db", "service"}
_TRUE, _FALSE = ["1", "true", "yes", "on"], ["0", "false", "no", "off"]


def _options_of(url: str) -> dict[str, str]:
    """The URL's options as `StoreURL.parse` reads them (only called on a URL it accepted)."""
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def _url_facts(url: str) -> tuple[set[str], str]:
    """The option names in `url`, and its scheme."""
    try:
        parts = urlsplit(url)
        return {name for name, _ in parse_qsl(parts.query, keep_blank_values=True)}, parts.scheme.lower()
    except ValueError:
        return set(), ""


def _bool(word: str) -> bool:
    assert word.lower() in _TRUE + _FALSE
    return word.lower() in _TRUE


#: How each option's text becomes the setting a store holds (the typed getters' rules: see their own tests).
_CONVERT: dict[str, Any] = {
    "max_entries": int, "split": int, "retries": int, "max_item_size": int, "max_connections": int,
    "health_check_interval": int, "db": int,
    "timeout": float, "connect_timeout": float, "dead_timeout": float,
    "fsync": _bool,
    "prefix": str, "service": str,
}


def _settings(store: Any) -> dict[str, Any]:
    """The settings a store holds, by the name of the URL option that sets each."""
    if isinstance(store, MemoryStore):
        return {"max_entries": store.max_entries}
    if isinstance(store, file_backend.FileStore):
        return {"fsync": store.fsync, "directory": store.directory}
    if isinstance(store, MemcacheStore):
        return {"servers": store.servers, "prefix": store.prefix, "timeout": store.timeout,
                "connect_timeout": store.connect_timeout, "dead_timeout": store.dead_timeout,
                "retries": store.retries, "max_item_size": store.max_item_size}
    if isinstance(store, RedisStore):
        options, retries, service = _redis_client(store)
        settings = {"kind": store.kind, "prefix": store.prefix.decode("utf-8", "surrogateescape"),
                    "timeout": options["socket_timeout"], "connect_timeout": options["socket_connect_timeout"],
                    "max_connections": options["max_connections"], "retries": retries,
                    "health_check_interval": options["health_check_interval"], "tls": options.get("ssl", False)}
        if "db" in options:
            settings["db"] = options["db"]
        if store.kind == "sentinel":
            settings["service"] = service
        return settings
    raise AssertionError(f"no settings known for {type(store).__name__}")


def _redis_client(store: RedisStore) -> tuple[dict[str, Any], int, str]:
    """The redis-py client options, retries and Sentinel service a `RedisStore` read from its URL."""
    return store.settings.options, store.settings.retries, store.settings.service


def _assert_opened_as_the_url_says(store: Any, url: str) -> None:
    parts, query = urlsplit(url), _options_of(url)
    scheme = parts.scheme.lower()
    assert type(store).__name__ == _BACKENDS[scheme][1]
    settings = _settings(store)
    for name, text in query.items():
        if name in settings and name in _CONVERT:
            assert settings[name] == _CONVERT[name](text), name
    given = [name for name in ("idle_timeout", "ttl") if name in query]  # the one option every store takes
    assert StoreURL.parse(url).idle_timeout == (float(query[given[0]]) if given else None)
    if isinstance(store, file_backend.FileStore):
        assert settings["directory"] == pathlib.Path(unquote(parts.path))
    elif isinstance(store, MemcacheStore):
        hosts = _parse_hosts(parts.netloc.rpartition("@")[2])
        assert settings["servers"] == tuple((host, 11211 if port is None else port) for host, port in hosts)
    elif isinstance(store, RedisStore):
        assert settings["kind"] == {"redis+sentinel": "sentinel", "redis+cluster": "cluster"}.get(scheme, "single")
        options = _redis_client(store)[0]
        assert options.get("username") == (unquote(parts.username) if parts.username else None)
        assert options.get("password") == (unquote(parts.password) if parts.password else None)
        if scheme in ("redis", "rediss"):
            ((host, port),) = _parse_hosts(parts.netloc.rpartition("@")[2])
            assert (options["host"], options["port"]) == (host, 6379 if port is None else port)
        if scheme in ("redis", "unix"):
            assert settings["tls"] is False
        elif "tls" not in query:
            assert settings["tls"] is (scheme == "rediss")
        else:
            assert settings["tls"] is _bool(query["tls"])


def _check_open(url: str) -> None:
    """`open_store(url)` gives a store set as the URL says, or a `ConfigError` naming the part at fault."""
    try:
        store = open_store(url)
    except ConfigError as exc:
        event(f"ConfigError option={exc.option}")
        names, scheme = _url_facts(url)
        assert exc.option in _URL_PARTS or exc.option in names, (exc.option, url)
        if exc.option == "scheme":
            assert scheme not in _BACKENDS, url  # unknown, or cookie://, which is no store
        return
    event(f"opened {type(store).__name__}")
    try:
        _assert_opened_as_the_url_says(store, url)
    finally:
        store.close()


# -- open_store ----------------------------------------------------------------------------


@given(wild_text)
@example("memory://")
@example("file:relative/dir")
@example("redis://h/0?prefix=x&timeout=0.5")
def test_open_store_on_any_text_gives_a_store_or_a_config_error(url: str) -> None:
    _check_open(url)


@given(urls)
@example("memcache://[::1]:11211,h2:1?ttl=nan")
@example("redis+sentinel://h1,h2:26380/mymaster/\u0663?tls=1&ssl_cert_reqs=none")
@example("unix:///run/redis.sock?db=3")
@example("redis+cluster://h1:7000,h2:7001/1")
def test_open_store_on_url_shaped_text_gives_a_store_or_a_config_error(url: str) -> None:
    _check_open(url)


_passwords = st.from_regex(r"S3cretPw[A-Za-z0-9]{8}", fullmatch=True)


def _with_password(scheme: str, password: str, host_list: str, path: str, query: str) -> str:
    return f"{scheme}://user:{password}@{host_list}{path}{query}"


#: Every scheme's errors redact the password; memory:// and cookie:// too (they once showed the whole URL).
_any_schemes = st.sampled_from([*sorted(_BACKENDS), "cookie", "nosuch", "REDIS", "x-y.z"])


@given(_any_schemes, _passwords, host_lists, paths, queries)
@example("redis", "S3cretPwhunter22", "host:bad", "/0", "")
@example("memory", "S3cretPwhunter22", "host", "", "")
@example("cookie", "S3cretPwhunter22", "host", "", "?encrypt=1")
def test_config_errors_never_show_the_password(
    scheme: str, password: str, host_list: str, path: str, query: str
) -> None:
    url = _with_password(scheme, password, host_list, path, query)
    try:
        store = open_store(url)
    except ConfigError as exc:
        assert password not in str(exc)
        names, _ = _url_facts(url)
        assert exc.option in _URL_PARTS or exc.option in names, (exc.option, url)
        return
    try:
        assert scheme not in ("memory", "cookie", "memcache")  # no credentials there (cookie:// is no store)
        _assert_opened_as_the_url_says(store, url)
    finally:
        store.close()


# -- StoreURL.parse ------------------------------------------------------------------------


@given(wild_text | urls)
def test_parse_raises_only_config_error(url: str) -> None:
    try:
        parsed = StoreURL.parse(url)
    except ConfigError:
        return
    assert parsed.port is None or 0 < parsed.port < 65536
    for host, port in parsed.hosts:
        assert isinstance(host, str) and host
        assert port is None or 0 < port < 65536


#: Option names and values as percent-escaping can carry them: anything but surrogates (no UTF-8 form).
option_text = st.text(st.characters(codec="utf-8") | punctuation, max_size=20)
#: Names a backend reads through the getters: any but the one option `StoreURL.parse` itself takes out.
backend_option_names = option_text.filter(lambda name: name not in ("idle_timeout", "ttl"))


def _escape(text: str, fully: bool = False) -> str:
    if fully:  # every byte as %XX: a second spelling of the same name
        return "".join(f"%{byte:02X}" for byte in text.encode("utf-8"))
    return quote(text, safe="")


def _query(pairs: list[tuple[str, str]]) -> str:
    return "&".join(f"{_escape(name)}={_escape(value)}" for name, value in pairs)


@given(st.dictionaries(backend_option_names, option_text, max_size=6), st.sampled_from(sorted(_BACKENDS)))
def test_every_option_comes_back_unchanged_from_get_str(options: dict[str, str], scheme: str) -> None:
    parsed = StoreURL.parse(f"{scheme}://host/path?{_query(list(options.items()))}")
    for name, value in options.items():
        assert parsed.get_str(name) == value
    parsed.finish()  # every option was read: nothing is left over


_bool_words = st.sampled_from(_TRUE + _FALSE).flatmap(lambda word: st.sampled_from([word, word.upper(), word.title()]))
_typed_options = st.lists(
    st.tuples(backend_option_names, st.integers() | st.floats(allow_nan=False, allow_infinity=False) | _bool_words),
    max_size=6, unique_by=lambda option: option[0],
)


@given(_typed_options)
def test_typed_getters_give_back_the_values_written(options: list[tuple[str, int | float | str]]) -> None:
    written = [(name, repr(value) if isinstance(value, float) else str(value)) for name, value in options]
    parsed = StoreURL.parse(f"x://h/?{_query(written)}")
    for name, value in options:
        if isinstance(value, int):
            assert parsed.get_int(name, 0, minimum=-(10**400)) == value
        elif isinstance(value, float):
            assert parsed.get_float(name, 0.0, minimum=-math.inf) == value
        else:
            assert parsed.get_bool(name, value.lower() in _FALSE) is (value.lower() in _TRUE)
    parsed.finish()


@given(st.dictionaries(option_text, option_text, max_size=4), option_text, option_text, option_text, st.data())
def test_a_repeated_option_is_refused_by_name(
    options: dict[str, str], name: str, first: str, second: str, data: st.DataObject
) -> None:
    if name in options:
        reject()
    parts = [f"{_escape(key)}={_escape(value)}" for key, value in options.items()]
    parts.insert(data.draw(st.integers(0, len(parts)), label="first at"), f"{_escape(name)}={_escape(first)}")
    spelling = _escape(name, fully=data.draw(st.booleans(), label="spelled out"))
    parts.insert(data.draw(st.integers(0, len(parts)), label="second at"), f"{spelling}={_escape(second)}")
    with pytest.raises(ConfigError) as caught:
        StoreURL.parse("memory://?" + "&".join(parts))
    assert caught.value.option == name


# -- well-formed URLs: a store set as they say; one bad value: refused by name ------------------

_OptionSpec = tuple[st.SearchStrategy[str], list[str]]


def _int_option(low: int, high: int | None = None) -> _OptionSpec:
    bad = ["abc", "", "1.5", "nan", "0x10", "1e3", "\u00b2", str(low - 1)]
    if high is not None:
        bad.append(str(high + 1))
    return st.integers(low, 10**12 if high is None else high).map(str), bad


_seconds_option: _OptionSpec = (
    st.floats(min_value=0.001, max_value=1e6).map(repr), ["abc", "", "nan", "inf", "-inf", "1e400", "-1", "0"])
_bool_option: _OptionSpec = (_bool_words, ["maybe", "", "2", "y", "t", "none", "ja"])
_REDIS_OPTIONS: dict[str, _OptionSpec] = {
    "prefix": (option_text, []), "timeout": _seconds_option, "connect_timeout": _seconds_option,
    "max_connections": _int_option(1), "health_check_interval": _int_option(0), "retries": _int_option(0),
}
#: The option every store URL takes (the manager's idle timeout), spelled either way.
_IDLE_TIMEOUT_NAMES = ("idle_timeout", "ttl")
_COMMON_OPTIONS: dict[str, _OptionSpec] = {"idle_timeout": _seconds_option, "ttl": _seconds_option}
#: Per scheme: each option a store reads, the text of valid values, and values it must refuse by name.
_SCHEME_OPTIONS: dict[str, dict[str, _OptionSpec]] = {
    "memory": {"max_entries": _int_option(1)},
    "file": {"fsync": _bool_option},
    "memcache": {
        "prefix": (st.from_regex(r"[!-~]{0,40}", fullmatch=True), ["a b", "\u00e9", "x" * 208]),
        "timeout": _seconds_option, "connect_timeout": _seconds_option, "dead_timeout": _seconds_option,
        "retries": _int_option(0), "max_item_size": _int_option(1024, 2**30),
    },
    "redis": {**_REDIS_OPTIONS, "db": _int_option(0)},
    "rediss": {**_REDIS_OPTIONS, "db": _int_option(0), "tls": _bool_option},
    "unix": {**_REDIS_OPTIONS, "db": _int_option(0)},
    "redis+sentinel": {**_REDIS_OPTIONS, "db": _int_option(0), "tls": _bool_option},
    "redis+cluster": {**_REDIS_OPTIONS, "tls": _bool_option},
}
_plain_hosts = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,15}[a-z0-9])?", fullmatch=True) | st.ip_addresses(v=4).map(str)
_host_ports = st.lists(st.tuples(_plain_hosts, st.none() | st.integers(1, 65535)), min_size=1, max_size=3,
                       unique_by=lambda entry: entry[0])


_directory_names = st.text(st.characters(codec="utf-8", exclude_characters="\x00") | punctuation, min_size=1,
                           max_size=20).filter(lambda text: text.strip("/"))


def _netloc(entries: list[tuple[str, int | None]]) -> str:
    return ",".join(host if port is None else f"{host}:{port}" for host, port in entries)


@st.composite
def _well_formed(draw: st.DrawFn) -> tuple[str, dict[str, str], dict[str, Any]]:
    """(URL before its query, the query's options as text, the settings the store must then hold)."""
    scheme = draw(st.sampled_from(sorted(_SCHEME_OPTIONS)), label="scheme")
    expected: dict[str, Any] = {}
    if scheme == "memory":
        base = "memory://"
    elif scheme == "file":
        name = draw(_directory_names, label="directory")
        base = "file:///tmp/sessionkit-props/" + _escape(name)
        expected["directory"] = pathlib.Path("/tmp/sessionkit-props/" + name)
    elif scheme == "memcache":
        entries = draw(_host_ports, label="servers")
        base = "memcache://" + _netloc(entries)
        expected["servers"] = tuple((host, 11211 if port is None else port) for host, port in entries)
    elif scheme == "redis+cluster":
        base = "redis+cluster://" + _netloc(draw(_host_ports, label="nodes"))
        expected["kind"] = "cluster"
    else:
        db = draw(st.none() | st.integers(0, 10**6), label="database in the path")
        expected["db"] = db or 0
        if scheme == "unix":
            base, expected["db"] = "unix:///run/redis.sock", 0
        elif scheme == "redis+sentinel":
            service = draw(st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True), label="service")
            base = f"redis+sentinel://{_netloc(draw(_host_ports, label='sentinels'))}/{service}"
            base += "" if db is None else f"/{db}"
            expected["service"] = service
        else:
            host, port = draw(_host_ports, label="host")[0]
            base = f"{scheme}://{_netloc([(host, port)])}" + ("" if db is None else f"/{db}")
        expected["kind"] = "sentinel" if scheme == "redis+sentinel" else "single"
    specs = _SCHEME_OPTIONS[scheme]
    names = draw(st.lists(st.sampled_from(sorted(specs)), unique=True, max_size=len(specs)), label="options")
    texts = {name: draw(specs[name][0], label=name) for name in names}
    for name, text in texts.items():
        expected[name] = _CONVERT[name](text) if name in _CONVERT else _bool(text)
    idle_name = draw(st.sampled_from([None, *_IDLE_TIMEOUT_NAMES]), label="idle timeout as")
    expected["idle_timeout"] = None
    if idle_name is not None:
        texts[idle_name] = draw(_seconds_option[0], label=idle_name)
        expected["idle_timeout"] = float(texts[idle_name])
    return base, texts, expected


def _settings_of(store: Any, url: str) -> dict[str, Any]:
    """`_settings`, and the idle timeout the URL gives the manager (it is no setting of the store)."""
    return {**_settings(store), "idle_timeout": StoreURL.parse(url).idle_timeout}


def _with_options(base: str, texts: dict[str, str]) -> str:
    return f"{base}?{_query(list(texts.items()))}" if texts else base


@given(_well_formed())
@example(("memory://", {"max_entries": "7", "ttl": "60"}, {"max_entries": 7, "idle_timeout": 60.0}))
@example(("redis+sentinel://h1:26379,h2/mymaster/3", {"prefix": "p:"},
          {"kind": "sentinel", "service": "mymaster", "db": 3, "prefix": "p:", "idle_timeout": None}))
def test_a_well_formed_url_opens_a_store_set_as_it_says(case: tuple[str, dict[str, str], dict[str, Any]]) -> None:
    base, texts, expected = case
    url = _with_options(base, texts)
    store = open_store(url)
    try:
        settings = _settings_of(store, url)
        for name, value in expected.items():
            assert settings[name] == value, name
        _assert_opened_as_the_url_says(store, url)
    finally:
        store.close()


@given(_well_formed(), st.data())
def test_a_url_with_one_bad_option_value_is_refused_naming_that_option(
    case: tuple[str, dict[str, str], dict[str, Any]], data: st.DataObject
) -> None:
    base, texts, _ = case
    specs = {**_SCHEME_OPTIONS[base.partition(":")[0]], **_COMMON_OPTIONS}
    name = data.draw(st.sampled_from(sorted(name for name, (_, bad) in specs.items() if bad)), label="bad option")
    bad = data.draw(st.sampled_from(specs[name][1]), label="bad value")
    event(f"{name}={bad!r}")
    if name in _IDLE_TIMEOUT_NAMES:  # one spelling at a time: both at once is refused for that alone
        texts = {key: value for key, value in texts.items() if key not in _IDLE_TIMEOUT_NAMES}
    with pytest.raises(ConfigError) as caught:
        open_store(_with_options(base, {**texts, name: bad})).close()
    assert caught.value.option == name


# -- host lists ------------------------------------------------------------------------------


@given(wild_text)
def test_parse_hosts_raises_only_value_error(text: str) -> None:
    try:
        parsed = _parse_hosts(text)
    except ValueError:
        return
    assert all(host and (port is None or 0 < port < 65536) for host, port in parsed)


_host_names = st.one_of(
    hostnames.map(lambda name: (name, name)),
    st.ip_addresses(v=4).map(lambda address: (str(address), str(address))),
    st.ip_addresses(v=6).map(lambda address: (f"[{address}]", str(address))),
    option_text.filter(bool).map(lambda text: (_escape(text), text)),  # any name, percent-escaped
)


@given(st.lists(st.tuples(_host_names, st.none() | st.integers(1, 65535)), min_size=1, max_size=4))
def test_host_lists_round_trip(entries: list[tuple[tuple[str, str], int | None]]) -> None:
    netloc = ",".join(written if port is None else f"{written}:{port}" for (written, _), port in entries)
    expected = tuple((host, port) for (_, host), port in entries)
    assert _parse_hosts(netloc) == expected
    assert StoreURL.parse(f"memcache://{netloc}/").hosts == expected


# -- durations and secret keys ----------------------------------------------------------------

_durations = st.one_of(
    st.floats(), st.integers(-(10**300), 10**300), st.timedeltas(),
    st.booleans(), st.none(), st.text(max_size=5), st.just(timedelta(0)),
)


@given(_durations)
def test_parse_duration_gives_positive_finite_seconds_or_config_error(value: Any) -> None:
    try:
        seconds = parse_duration(value, name="ttl")
    except ConfigError as exc:
        assert exc.option == "ttl"
        return
    assert type(seconds) is float and 0 < seconds < math.inf
    assert seconds == (value.total_seconds() if isinstance(value, timedelta) else float(value))


_key_text = st.text(st.characters(codec="utf-8"), max_size=40)
_keys = st.one_of(st.none(), _key_text, st.binary(max_size=40),
                  st.lists(_key_text | st.binary(max_size=40) | st.integers() | st.none(), max_size=3))


def _keys_as_bytes(keys: Any) -> tuple[bytes, ...] | None:
    """What `parse_secret_keys` must give: every key as bytes, each 32+ bytes long; None if it must refuse."""
    if keys is None:
        return None
    items = [keys] if isinstance(keys, (str, bytes)) else list(keys)
    result = []
    for key in items:
        if isinstance(key, str):
            key = key.encode("utf-8")  # these keys have a UTF-8 form
        if not isinstance(key, bytes) or len(key) < 32:
            return None
        result.append(key)
    return tuple(result) or None


@given(_keys)
@example(["k" * 32, b"o" * 32])
@example(["k" * 32, None])
def test_parse_secret_keys_gives_long_byte_keys_or_config_error(keys: Any) -> None:
    expected = _keys_as_bytes(keys)
    if expected is None:
        with pytest.raises(ConfigError) as caught:
            parse_secret_keys(keys)
        assert caught.value.option == "secret_keys"
    else:
        assert parse_secret_keys(keys) == expected


# -- once bugs, kept fixed ------------------------------------------------------------------


@given(st.sampled_from(["redis", "rediss", "redis+sentinel"]), st.sampled_from(["\u00b2", "%C2%B2", "\u00b9\u2070"]))
@example("redis", "%C2%B2")
def test_a_non_ascii_digit_as_redis_database_is_a_config_error(scheme: str, db: str) -> None:
    path = f"/mymaster/{db}" if scheme == "redis+sentinel" else f"/{db}"
    with pytest.raises(ConfigError) as caught:
        open_store(f"{scheme}://h{path}").close()
    assert caught.value.option == "db"


@pytest.mark.parametrize("template", ["redis://h/?prefix={}", "file:///tmp/sessionkit-fuzz/{}"])
@given(text=st.text(surrogates, min_size=1))
@example(text="\ud800")
def test_surrogates_in_the_url_are_a_config_error(template: str, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(template.format(text)).close()
    assert caught.value.option == "url"


@given(st.sampled_from(["", "re dis", "1redis", "redis_x", "-"]), _passwords, host_lists, paths, queries)
@example("", "S3cretPwhunter22", "host", "", "")
def test_config_errors_of_a_url_without_a_valid_scheme_never_show_the_password(
    scheme: str, password: str, host_list: str, path: str, query: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(_with_password(scheme, password, host_list, path, query)).close()
    assert caught.value.option == "url"  # no scheme at all, as far as a URL parser can tell
    assert password not in str(caught.value)


@given(st.integers())
@example(10**400)
@example(0)
@example(-1)
@example(int(sys.float_info.max) + 2**969)  # larger than the largest float, yet rounds down to it
@example(int(sys.float_info.max) + 2**970)  # rounds up past it
def test_parse_duration_of_any_int_is_seconds_or_config_error(value: int) -> None:
    try:
        as_float = float(value)
    except OverflowError:
        as_float = math.inf
    if 0 < as_float < math.inf:
        seconds = parse_duration(value, name="ttl")
        assert type(seconds) is float and seconds == as_float
    else:
        with pytest.raises(ConfigError) as caught:
            parse_duration(value, name="ttl")
        assert caught.value.option == "ttl"


@given(st.text(st.characters(codec="utf-8") | surrogates, max_size=40))
@example("\udcff" * 40)
@example("\ud800" * 40)
def test_parse_secret_keys_of_any_text_is_keys_or_config_error(key: str) -> None:
    """A str key is its UTF-8 bytes, lone low surrogates standing for the bytes os.environ could not decode."""
    try:
        raw = key.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = None
    if raw is None or len(raw) < 32:
        with pytest.raises(ConfigError) as caught:
            parse_secret_keys(key)
        assert caught.value.option == "secret_keys"
    else:
        assert parse_secret_keys(key) == (raw,)


# -- once a bug, kept fixed: numbers in options are ASCII digits, as ports and the path's database are ---


@given(st.sampled_from(["redis://h/0?db={}", "memory://?max_entries={}", "file:///tmp/x?ttl={}",
                        "memcache://h?timeout={}"]),
       st.sampled_from(["\u0663", "\u0661\u0660", "\uff11", "\u0967.5"]))
@example("redis://h/0?db={}", "\u0663")
def test_numbers_in_options_take_ascii_digits_only(template: str, digits: str) -> None:
    with pytest.raises(ConfigError) as caught:
        open_store(template.format(quote(digits))).close()
    assert caught.value.option == template.rpartition("?")[2].partition("=")[0]
