"""The `mailgate` command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from mailgate.config import ConfigError, Settings, load_settings
from mailgate.memory import return_big_blocks_to_the_os
from mailgate.store import directory, history
from mailgate.store.db import create_engine
from mailgate.store.migrate import upgrade
from mailgate.store.outbox import requeue

T = TypeVar("T")

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
users_app = typer.Typer(no_args_is_help=True, help="API users and their mail addresses.")
keys_app = typer.Typer(no_args_is_help=True, help="API keys (shown once, stored hashed).")
sites_app = typer.Typer(no_args_is_help=True, help="Sites.")
records_app = typer.Typer(no_args_is_help=True, help="Records of a site.")
perms_app = typer.Typer(no_args_is_help=True, help="Rights of users on sites.")
mails_app = typer.Typer(no_args_is_help=True, help="Outgoing mails: history and delivery state.")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
for sub, name in [
    (users_app, "users"),
    (keys_app, "keys"),
    (sites_app, "sites"),
    (records_app, "records"),
    (perms_app, "permissions"),
    (mails_app, "mails"),
    (db_app, "db"),
]:
    app.add_typer(sub, name=name)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", envvar="MAILGATE_CONFIG", help="TOML configuration file."),
]
DataDirOpt = Annotated[
    Path | None,
    typer.Option("--data-dir", envvar="MAILGATE_DATA_DIR", help="Data folder [./mailgate-data]."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]

_globals: dict[str, Path | None] = {"config": None, "data_dir": None}


@app.callback()
def main_options(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Pleasanter-compatible email-sending API with a durable outbox."""
    _globals["config"] = config
    _globals["data_dir"] = data_dir


def fail(message: str, code: int = 1) -> None:
    typer.echo(f"mailgate: {message}", err=True)
    raise typer.Exit(code)


def settings_for(config: Path | None, data_dir: Path | None) -> Settings:
    try:
        return load_settings(config or _globals["config"], data_dir or _globals["data_dir"])
    except ConfigError as error:
        fail(str(error), 2)
        raise  # unreachable: fail() exits


def emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")
    else:
        typer.echo(text)


async def _with_engine(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    engine = create_engine(settings.database_url, pool_size=2)
    try:
        await upgrade(engine)
        return await work(engine)
    finally:
        await engine.dispose()


def run_in_transaction(settings: Settings, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    async def in_tx(engine: AsyncEngine) -> T:
        async with engine.begin() as conn:
            return await work(conn)

    try:
        return asyncio.run(_with_engine(settings, in_tx))
    except directory.NotFound as error:
        fail(str(error))
        raise
    except ConfigError as error:
        fail(str(error), 2)
        raise


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed (uvicorn[standard] brings it): a faster event loop."""
    # Database calls hop to driver threads (aiosqlite); with the default 5 ms GIL switch
    # interval each hop can wait that long behind the busy event loop thread.
    sys.setswitchinterval(0.0005)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _process_setup() -> None:
    return_big_blocks_to_the_os()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # Alembic narrates every plugin it loads at INFO; operators need only what changed.
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn re-raises SIGTERM after a graceful stop; a clean stop should exit 0."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            yield

    return Server


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8080].")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Do not deliver mail here.")
    ] = False,
    no_bootstrap: Annotated[
        bool, typer.Option("--no-bootstrap", help="Do not create the demo on an empty database.")
    ] = False,
    workers: Annotated[
        int, typer.Option(min=1, help="HTTP processes (each delivers too, unless --no-worker).")
    ] = 1,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Migrate, serve the HTTP API and (unless --no-worker) deliver mail in this process."""
    import uvicorn

    from mailgate.api.app import create_app
    from mailgate.bootstrap import create_demo_if_empty, curl_command

    _process_setup()
    _Server = _server_class()
    settings = settings_for(config, data_dir)
    host = host or settings.host
    port = port or settings.port

    async def prepare() -> None:
        engine = create_engine(settings.database_url, pool_size=2)
        try:
            await upgrade(engine)
            demo = None if no_bootstrap else await create_demo_if_empty(engine)
        finally:
            await engine.dispose()
        if demo is not None:
            shown = "localhost" if host in ("127.0.0.1", "0.0.0.0", "::") else host
            url = f"http://{shown}:{port}{settings.base_path}"
            print(
                f"\nCreated a demo: site {demo.site_id}, record {demo.record_id}, "
                f"user {demo.login!r}.\nAPI key (shown only now): {demo.api_key}\n"
                f"Try it:\n\n  {curl_command(demo, url)}\n",
                flush=True,
            )

    async def main() -> None:
        await prepare()
        app_ = create_app(settings, run_worker=not no_worker)
        server = _Server(
            uvicorn.Config(
                app_,
                host=host,
                port=port,
                log_level="info",
                access_log=False,
                timeout_graceful_shutdown=30,
            )
        )
        await server.serve()

    if workers == 1:
        run_async(main())
        return
    from mailgate.api.app import IN_PROCESS_DELIVERY

    run_async(prepare())
    # The HTTP processes rebuild their settings from the environment: hand the resolved ones on.
    os.environ["MAILGATE_DATA_DIR"] = str(settings.data_dir)
    os.environ["MAILGATE_DATABASE_URL"] = settings.database_url
    if config or _globals["config"]:
        os.environ["MAILGATE_CONFIG"] = str(config or _globals["config"])
    os.environ[IN_PROCESS_DELIVERY] = "0" if no_worker else "1"
    uvicorn.run(
        "mailgate.api.app:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(min=1, help="Concurrent deliveries [MAILGATE_DELIVERY_CONCURRENCY]."),
    ] = None,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Deliver mail only (no HTTP); SIGTERM stops claiming and finishes what is in flight."""
    from mailgate.delivery.runtime import build_worker

    _process_setup()
    settings = settings_for(config, data_dir)

    async def main(engine: AsyncEngine) -> None:
        outcomes_engine = create_engine(settings.database_url, durable_commits=False)
        runner = build_worker(settings, outcomes_engine, concurrency)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        logging.getLogger("mailgate").info("worker %s started", runner.name)
        try:
            await runner.run()
        finally:
            await runner.transport.close()
            await outcomes_engine.dispose()

    run_async(_with_engine(settings, main))


@db_app.command("upgrade")
def db_upgrade(config: ConfigOpt = None, data_dir: DataDirOpt = None) -> None:
    """Apply the schema migrations (safe to run while other processes start)."""
    settings = settings_for(config, data_dir)

    async def nothing(_: AsyncEngine) -> None:
        return None

    asyncio.run(_with_engine(settings, nothing))
    typer.echo("database is up to date", err=True)


@users_app.command("add")
def users_add(
    login: Annotated[str, typer.Option(help="Login name (unique).")],
    name: Annotated[str, typer.Option(help="Display name, used in From.")],
    mail: Annotated[list[str] | None, typer.Option(help="A mail address; repeat for more.")] = None,
    language: Annotated[str | None, typer.Option(help="en or ja (API messages).")] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add an API user."""
    from mailgate.mail.addresses import parse_mailbox

    if language not in (None, "en", "ja"):
        fail("--language must be en or ja")
    mails = mail or []
    for address in mails:
        mailbox = parse_mailbox(address)
        if mailbox is None or mailbox.name:
            fail(f"not a mail address: {address!r}")
    settings = settings_for(config, data_dir)

    async def work(conn: AsyncConnection) -> int:
        from sqlalchemy.exc import IntegrityError

        try:
            return await directory.add_user(conn, login, name, mails, language)
        except IntegrityError:
            raise directory.NotFound(f"a user with login {login!r} exists already") from None

    user_id = run_in_transaction(settings, work)
    emit(as_json, {"id": user_id, "login": login}, f"user {login} added with id {user_id}")


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option(help="The user's login.")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    settings = settings_for(config, data_dir)
    key = run_in_transaction(settings, lambda conn: directory.create_key(conn, user))
    emit(as_json, {"user": user, "api_key": key}, key)


@keys_app.command("revoke")
def keys_revoke(
    user: Annotated[str, typer.Option(help="The user's login.")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke all of a user's API keys."""
    settings = settings_for(config, data_dir)
    count = run_in_transaction(settings, lambda conn: directory.revoke_keys(conn, user))
    emit(as_json, {"revoked": count}, f"{count} key(s) revoked")


@sites_app.command("add")
def sites_add(
    title: Annotated[str, typer.Option(help="Site title.")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add a site."""
    settings = settings_for(config, data_dir)
    site_id = run_in_transaction(settings, lambda conn: directory.add_site(conn, title))
    emit(as_json, {"id": site_id}, f"site {site_id} added")


@records_app.command("add")
def records_add(
    site: Annotated[int, typer.Option(help="The site's id.")],
    title: Annotated[str, typer.Option(help="Record title.")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Add a record to a site."""
    settings = settings_for(config, data_dir)
    record_id = run_in_transaction(settings, lambda conn: directory.add_record(conn, site, title))
    emit(as_json, {"id": record_id}, f"record {record_id} added")


@perms_app.command("grant")
def permissions_grant(
    site: Annotated[int, typer.Option(help="The site's id.")],
    user: Annotated[str, typer.Option(help="The user's login.")],
    read: Annotated[bool, typer.Option("--read", help="Right to read.")] = False,
    send_mail: Annotated[bool, typer.Option("--send-mail", help="Right to send mail.")] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Grant rights on a site (rights already held are kept)."""
    settings = settings_for(config, data_dir)
    rights = run_in_transaction(
        settings, lambda conn: directory.grant(conn, site, user, read, send_mail)
    )
    emit(
        as_json,
        {"site": site, "user": user, "rights": rights},
        f"{user} on site {site}: {', '.join(rights) or 'no rights'}",
    )


@mails_app.command("list")
def mails_list(
    record: Annotated[int | None, typer.Option(help="Only this record's mails.")] = None,
    status: Annotated[str | None, typer.Option(help="Only mails with this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many.")] = 50,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Outgoing mails, newest first."""
    settings = settings_for(config, data_dir)
    rows = run_in_transaction(
        settings, lambda conn: history.list_mails(conn, record, status, limit)
    )
    lines = [
        f"{r['id']:>8}  {r['status']:<9} {r['created_at'][:19]}  rec {r['record_id']}  "
        f"to {r['to'] or r['cc'] or r['bcc']}  {r['title']}"
        for r in rows
    ]
    emit(as_json, rows, "\n".join(lines) or "no mails")


@mails_app.command("show")
def mails_show(
    mail_id: Annotated[int, typer.Argument(help="The mail's id.")],
    raw: Annotated[bool, typer.Option("--raw", help="Print the RFC 5322 message bytes.")] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """One mail with its timeline of events."""
    from mailgate.mail.compose import compose
    from mailgate.store.outbox import load_message

    settings = settings_for(config, data_dir)

    async def work(conn: AsyncConnection) -> tuple[dict[str, Any] | None, bytes | None]:
        found = await history.show_mail(conn, mail_id)
        if found is None or not raw:
            return found, None
        return found, compose(await load_message(conn, mail_id))

    found, data = run_in_transaction(settings, work)
    if found is None:
        fail(f"no mail with id {mail_id}")
        return
    if data is not None:
        sys.stdout.buffer.write(data)
        return
    text = [f"{k}: {v}" for k, v in found.items() if k not in ("events", "body")]
    text.append("events:")
    text += [
        f"  {e['at']}  {e['event']:<9} attempt {e['attempt']}  {e['detail'] or ''}".rstrip()
        for e in found["events"]
    ]
    emit(as_json, found, "\n".join(text))


@mails_app.command("retry")
def mails_retry(
    mail_id: Annotated[int, typer.Argument(help="The mail's id.")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Requeue a failed or dead mail now."""
    settings = settings_for(config, data_dir)

    async def work(engine: AsyncEngine) -> tuple[bool, str | None]:
        return await requeue(engine, mail_id)

    requeued, status = asyncio.run(_with_engine(settings, work))
    if status is None:
        fail(f"no mail with id {mail_id}")
    if not requeued:
        fail(f"mail {mail_id} is {status}; only failed or dead mails can be retried")
    emit(as_json, {"id": mail_id, "status": status}, f"mail {mail_id} is {status} again")


def main() -> None:
    app()
