"""The survey service's HTTP bodies: one command in, one receipt out."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.events import PastTimestamp, ProcessId
from shared.profile import StatedProfile


class RecordSurveyResponse(BaseModel):
    """Record one completed anonymous survey response.

    Deliberately no participant reference, contact details or free text: the survey
    promised anonymity, so the body can only carry what the respondent chose to say in
    the profile's fixed categories.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "profile": {
                        "region": "northeast",
                        "lived_experience": "yes",
                        "race_ethnicity": ["indigenous", "multiracial"],
                        "gender": "declined",
                    },
                    "submitted_at": "2018-03-01T17:30:00Z",
                }
            ]
        },
    )

    profile: StatedProfile = Field(
        description="What the respondent chose to say about themselves; every question is optional and "
        '"declined" is an answer.'
    )
    submitted_at: PastTimestamp | None = Field(
        None,
        description="When the respondent submitted the survey, with a time zone; defaults to now. "
        "May not be before 2000-01-01 or more than a minute in the future.",
    )
    process_id: ProcessId | None = Field(
        None, description="The engagement process the survey belongs to; defaults to the configured process."
    )


class SurveyResponseRecorded(BaseModel):
    """Receipt for a response the event log has stored."""

    response_id: str = Field(description="Id of the response (its own anonymous participant), e.g. `sr-...`.")
    sequence: int = Field(description="Stream sequence at which the event log stored the response.")
    duplicate: bool = Field(description="True when this request repeated an earlier one (same Idempotency-Key).")
