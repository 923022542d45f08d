"""The request and response bodies of ``POST /predict``, built from the served model's task and data columns, so the
OpenAPI schema names the real fields a client sends and gets back."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model


class Classified(BaseModel):
    label: str = Field(description="The most probable label.")
    score: float = Field(description="Its probability.")
    probs: list[float] = Field(description="Every label's probability, in the order /info lists the labels.")


class Regressed(BaseModel):
    value: float | None = Field(description="The predicted value.")


class Tagged(BaseModel):
    labels: list[str] = Field(description="The labels whose probability is at least the model's threshold.")
    probs: dict[str, float] = Field(description="Every label's probability.")


class Entity(BaseModel):
    text: str = Field(description="The entity as it is written in the input, text[start:end].")
    type: str = Field(description="Its type (PER, LOC, ...).")
    start: int = Field(description="Character offset of its first character.")
    end: int = Field(description="Character offset after its last character.")
    score: float = Field(description="Mean probability of its words' tags.")


class Recognized(BaseModel):
    entities: list[Entity]
    tags: list[str] = Field(
        description="One tag per word of the text, as the model's word splitter splits it (data.words: bert, "
        "whitespace or characters); a long text is read in overlapping windows, so every word has one."
    )


class Answered(BaseModel):
    id: str = Field(description="The question's id (its index in the request when none was sent).")
    answer: str = Field(description='The answer, context[start:end]; "" for no answer.')
    score: float = Field(description="Its probability among the best candidates.")
    start: int | None = Field(description="Character offset of the answer in the context (null: no answer).")
    end: int | None = Field(description="Character offset after the answer (null: no answer).")


ROWS: dict[str, type[BaseModel]] = {
    "classification": Classified,
    "regression": Regressed,
    "multi-label classification": Tagged,
    "named-entity recognition": Recognized,
    "question answering": Answered,
}


class Problem(BaseModel):
    """Every error answer: one line naming the field and the fix."""

    error: str = Field(description="What is wrong and how to fix it, starting with the field.")
    field: str | None = Field(description="The request field at fault (e.g. inputs.3.text), when there is one.")


def input_model(fields: dict[str, bool], max_chars: int) -> type[BaseModel]:
    """One input: the task's data columns as string fields (optional ones may be left out), nothing else."""
    spec: dict[str, Any] = {
        name: (str, Field(max_length=max_chars)) if required else (str | None, Field(None, max_length=max_chars))
        for name, required in fields.items()
    }
    return create_model("Input", __config__=ConfigDict(extra="forbid", strict=True), **spec)


def batch_model(row: type[BaseModel], max_inputs: int) -> type[BaseModel]:
    """Several inputs at once: ``{"inputs": [...]}``."""
    return create_model(
        "Inputs",
        __config__=ConfigDict(extra="forbid", strict=True),
        inputs=(list[row], Field(min_length=1, max_length=max_inputs)),  # type: ignore[valid-type]
    )


def response_model(task: str) -> type[BaseModel]:
    """``{"predictions": [...], "truncated": [...]}`` with the task's prediction rows."""
    return create_model(
        "Predictions",
        predictions=(list[ROWS[task]], Field(description="One per input, in request order.")),  # type: ignore[valid-type]
        truncated=(list[int], Field(description="Inputs longer than the model's max_length, cut as in training.")),
    )
