"""A reward model: ``AutoModelForSequenceClassification`` scoring (question, sample text) pairs.

The pair is formatted with the tokenizer's chat template as a user/assistant exchange when there is
one, else as ``question + "\\n\\n" + text``. The score is the logit of a one-label head, or the
log-probability of the last label (the "good" class) of a classifier. Batches are right-padded with
the model's own pad id, so a score does not depend on the batch it was computed in.

Inputs longer than the model's limit lose the start of the question first: the rationale is what
is being scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotfactory.errors import ConfigError, TeacherError, first_line
from cotfactory.model_loading import quiet_transformers, resolve_device, resolve_dtype
from cotfactory.scorers.base import Score, ScoreItem, Scorer

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig

#: Bump when the text given to the model changes: it is part of the scores' cache key.
FORMAT_VERSION = 1
_NO_LIMIT = 1_000_000  # tokenizers without a limit report ~1e30


class RewardModelScorer(Scorer):
    name = "reward-model"

    def __init__(self, config: FilterConfig):
        super().__init__(config)
        quiet_transformers()
        assert config.reward is not None
        self.spec = config.reward
        location = _check_location(self.spec)
        self.device = resolve_device(config.device)
        self.model = _load_model(location, self.spec, self.device, config.trust_remote_code)
        self.tokenizer = _load_tokenizer(location, self.spec, config.trust_remote_code)
        self.pad_id = self._pad_id()
        self.max_length = self._max_length()

    def settings(self) -> dict[str, Any]:
        return {"model": self.spec.rstrip("/"), "format": FORMAT_VERSION}

    def _pad_id(self) -> int:
        """The model finds each row's last real token by its pad id, so padding must use that id."""
        text_config = self.model.config.get_text_config()
        if text_config.pad_token_id is None:
            pad = self.tokenizer.pad_token_id
            if pad is None:
                raise ConfigError(f"reward model '{self.spec}': neither the model nor its tokenizer has a pad token")
            text_config.pad_token_id = pad
        return int(text_config.pad_token_id)

    def _max_length(self) -> int:
        limits = [self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", None)]
        return min((int(n) for n in limits if isinstance(n, int | float) and 0 < n < _NO_LIMIT), default=_NO_LIMIT)

    def score(self, items: list[ScoreItem]) -> list[Score]:
        size = self.config.reward_batch_size
        scores: list[float] = []
        for start in range(0, len(items), size):
            scores.extend(self._score_batch([self.encode(item) for item in items[start : start + size]]))
        return [(value, {}) for value in scores]

    # formatting -------------------------------------------------------------------------------
    def format(self, question: str, text: str) -> str:
        if self.tokenizer.chat_template:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": text}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return f"{question}\n\n{text}"

    def _tokens(self, question: str, text: str) -> list[int]:
        # a chat template writes its own special tokens; plain text gets the tokenizer's usual ones
        add_special = not self.tokenizer.chat_template
        return self.tokenizer(self.format(question, text), add_special_tokens=add_special)["input_ids"]

    def encode(self, item: ScoreItem) -> list[int]:
        """Token ids of one pair, cutting the start of the question when the whole is too long."""
        question, text = item.problem.question, item.sample.text
        ids = self._tokens(question, text)
        question_ids = self.tokenizer(question, add_special_tokens=False)["input_ids"]
        while len(ids) > self.max_length and question_ids:
            question_ids = question_ids[len(ids) - self.max_length :]
            ids = self._tokens(self.tokenizer.decode(question_ids), text)  # shrinks every turn
        return ids[-self.max_length :]  # the rationale alone is too long: keep its end

    # scoring ----------------------------------------------------------------------------------
    def _score_batch(self, rows: list[list[int]]) -> list[float]:
        import torch

        width = max(len(ids) for ids in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, ids in enumerate(rows):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, : len(ids)] = 1
        with torch.inference_mode():
            logits = self.model(
                input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device)
            ).logits.float()
        # one label: the reward itself; several: log p(last label), the "good" class
        values = logits[:, 0] if logits.shape[-1] == 1 else torch.log_softmax(logits, dim=-1)[:, -1]
        return [float(v) for v in values.cpu()]


def _check_location(spec: str) -> str:
    path = Path(spec)
    if path.exists() or spec.startswith((".", "/", "~")):
        if not (path.expanduser() / "config.json").exists():
            raise ConfigError(f"reward model '{spec}': not a model folder (no config.json)")
        return str(path.expanduser())
    return spec  # a hub id; HF_HUB_OFFLINE decides whether it may be fetched


def _load_model(location: str, spec: str, device: str, trust_remote_code: bool) -> Any:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        model_config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TeacherError(f"reward model '{spec}': cannot load its config: {first_line(exc)}") from None
    architectures = model_config.architectures or []
    classifier = any(name.endswith("ForSequenceClassification") for name in architectures)
    if architectures and not classifier and not trust_remote_code:
        # loading a causal LM here would give it a freshly initialised, random score head
        raise ConfigError(
            f"reward model '{spec}': {architectures[0]} is not a sequence classifier (no trained score head)"
        )
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            location, dtype=resolve_dtype("auto", device), trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError) as exc:
        raise TeacherError(f"reward model '{spec}': cannot load: {first_line(exc)}") from None
    return model.to(device).eval()


def _load_tokenizer(location: str, spec: str, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TeacherError(f"reward model '{spec}': cannot load its tokenizer: {first_line(exc)}") from None
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
