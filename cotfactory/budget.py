"""The run's token budget: stop sending before the total could pass ``max_total_tokens``.

Every request reserves an upper bound of its cost when it is handed to the teacher and settles
the real figure when its sample comes back, so concurrent requests can never overshoot together.
"""

from __future__ import annotations

from collections.abc import Iterator

from cotfactory.records import Request, Sample


def upper_bound_tokens(request: Request, retry_tokens: int = 0) -> int:
    """A prompt never has more tokens than UTF-8 bytes (plus a few per chat message for the template);
    the completion never more than max_tokens, plus the one length retry's allowance."""
    prompt = request.prompt
    if prompt is None:
        prompt_bound = 0
    elif prompt.text is not None:
        prompt_bound = len(prompt.text.encode()) + 8
    else:
        prompt_bound = sum(len(m["content"].encode()) + 8 for m in prompt.messages or []) + 8
    completion = request.max_tokens + (prompt_bound + retry_tokens if retry_tokens > request.max_tokens else 0)
    return prompt_bound + completion


class TokenBudget:
    def __init__(self, limit: int | None, used: int = 0, retry_tokens: int = 0):
        self.limit = limit
        self.used = used
        self.reserved = 0
        self.retry_tokens = retry_tokens
        self.stopped = False

    def gate(self, requests: Iterator[Request]) -> Iterator[Request]:
        """Pass requests on while their worst case still fits; stop the stream at the first that
        does not (the plan is problem-major, so the run ends on a clean boundary)."""
        for request in requests:
            if self.limit is not None:
                cost = upper_bound_tokens(request, self.retry_tokens)
                if self.used + self.reserved + cost > self.limit:
                    self.stopped = True
                    return
                self.reserved += cost
            yield request

    def settle(self, sample: Sample) -> None:
        if self.limit is not None:
            self.reserved -= upper_bound_tokens(sample.request, self.retry_tokens)
        self.used += sample.prompt_tokens + sample.completion_tokens
