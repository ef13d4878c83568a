"""Documents read over HTTP(S): the values a HelmRelease names by URL (``valuesFrom[].externalSourceRef``).

One aiohttp session for the operator, opened on first use and closed at shutdown. Every failure (an answer other
than 200, a refused connection, a timeout, a body that is not text) comes out as one `WebReadError`, whose detail
has any credentials in URLs masked, since it ends up in a HelmRelease's status.
"""

from __future__ import annotations

from typing import Final

import aiohttp

from helmrelease.api.spec import mask_urls

#: Seconds for the whole request, body included.
READ_TIMEOUT: Final = 30.0


class WebReadError(Exception):
    """A URL could not be read: `status` is the HTTP status of an answer other than 200, None when there was no
    answer (or no text in it), and `detail` says why in one line."""

    def __init__(self, url: str, status: int | None, detail: str) -> None:
        super().__init__(f"{mask_urls(url)}: {detail}")
        self.status = status
        self.detail = detail


class WebReader:
    """Reads text documents by URL, with one shared session."""

    def __init__(self, *, timeout: float = READ_TIMEOUT) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def read_text(self, url: str) -> str:
        """The body of `url` as text; raises `WebReadError`."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    raise WebReadError(url, response.status, f"answered HTTP {response.status}")
                return await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            detail = mask_urls(str(error)) or type(error).__name__
            raise WebReadError(url, None, detail) from None
        except UnicodeDecodeError as error:
            raise WebReadError(url, None, f"the answer is not text ({error.reason})") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
