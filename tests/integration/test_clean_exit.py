"""A script that ends right after async storage calls exits cleanly.

obstore's runtime threads can still be finishing callbacks into Python when a script's
`asyncio.run()` returns, and an interpreter that finalises under them aborts (SIGABRT,
exit status 134). Measured against moto before the library waited at exit: 7 of 20 runs
of this script aborted. The library now waits briefly at exit once an async call was
made (`_fork._EXIT_GRACE`); every run must exit with 0.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.servers import MotoServer

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from sqlalchemy_obstore import FileObject, ObstoreBackend, storages

    endpoint, bucket = sys.argv[1], sys.argv[2]
    storages.register_backend(ObstoreBackend(
        "s3", f"s3://{bucket}/", endpoint=endpoint, region="us-east-1",
        access_key_id="testing", secret_access_key="testing", allow_http=True,
        virtual_hosted_style_request=False,
    ))

    async def main() -> None:
        for _ in range(5):
            file = FileObject(filename="a.txt", content=b"x" * 1000, backend="s3")
            await file.save_async()
            assert await file.get_content_async() == b"x" * 1000
            await file.delete_async()

    asyncio.run(main())
    """
)

RUNS = 12


def test_scripts_exit_cleanly_after_async_calls(moto_server: MotoServer, tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    codes = []
    for _ in range(RUNS):
        completed = subprocess.run(
            [sys.executable, str(script), moto_server.endpoint, moto_server.bucket],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        codes.append(completed.returncode)
        assert completed.returncode == 0, (codes, completed.stderr[-2000:])
