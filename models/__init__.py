"""vaxbot's SQLAlchemy models; importing this package registers every table on ``Base.metadata``."""

from models.base import Base, UTCDateTime, utcnow
from models.certificate import Certificate, CodePage, CodeToken, Grant
from models.clinic import Appointment, Notice, QueueCounter, Reminder, Slot, Visit
from models.identity import Consent, Identity, PlatformAccount
from models.ops import AuditEntry, ConversationState, OutboxMessage, PlatformToken, ProcessedMessage
from models.registry import Clinic, Dose, Guardian, RegistryBatch, RegistryStaged, Vaccinee
from models.verification import Verification

__all__ = [
    "Appointment",
    "AuditEntry",
    "Base",
    "Certificate",
    "Clinic",
    "CodePage",
    "CodeToken",
    "Consent",
    "ConversationState",
    "Dose",
    "Grant",
    "Guardian",
    "Identity",
    "Notice",
    "OutboxMessage",
    "PlatformAccount",
    "PlatformToken",
    "ProcessedMessage",
    "QueueCounter",
    "RegistryBatch",
    "RegistryStaged",
    "Reminder",
    "Slot",
    "UTCDateTime",
    "Vaccinee",
    "Verification",
    "Visit",
    "utcnow",
]
