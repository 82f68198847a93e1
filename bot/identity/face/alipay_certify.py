"""Alipay's identity verification (支付宝身份验证, ``alipay.user.certify.open.*``) with a face (``FACE``).

``initialize`` registers the subject under our order number and gives a ``certify_id`` (usable for about
23 hours); ``certify`` is a page API, so its signed gateway URL is built here and opened by the user's
browser, no call made. Alipay sends the browser back to ``return_url`` whether the face passed or not,
so only ``query`` decides: ``passed == "T"``. ``passed == "F"`` also means "not (yet) certified".

The Alipay mini program runs the same calls with its own app id (``api`` signs as the mini program), and its
page opens the certify URL with the ``certifyId`` through ``my.call('startBizService', {name: 'open-certify'})``;
the page's ``resultStatus`` proves nothing either, so ``query`` decides there too.
"""

from __future__ import annotations

import re

from alipay.aop.api.domain.AlipayUserCertifyOpenCertifyModel import AlipayUserCertifyOpenCertifyModel
from alipay.aop.api.domain.AlipayUserCertifyOpenInitializeModel import AlipayUserCertifyOpenInitializeModel
from alipay.aop.api.domain.AlipayUserCertifyOpenQueryModel import AlipayUserCertifyOpenQueryModel
from alipay.aop.api.domain.OpenCertifyIdentityParam import OpenCertifyIdentityParam
from alipay.aop.api.domain.OpenCertifyMerchantConfig import OpenCertifyMerchantConfig
from alipay.aop.api.request.AlipayUserCertifyOpenCertifyRequest import AlipayUserCertifyOpenCertifyRequest
from alipay.aop.api.request.AlipayUserCertifyOpenInitializeRequest import AlipayUserCertifyOpenInitializeRequest
from alipay.aop.api.request.AlipayUserCertifyOpenQueryRequest import AlipayUserCertifyOpenQueryRequest

from bot.identity.face.base import FaceError, Outcome, Started, StartRequest
from bot.platforms.alipay.client import AlipayAPI, AlipayAPIError

BIZ_CODE = "FACE"
IDENTITY_TYPE = "CERT_INFO"
CERT_TYPE = "IDENTITY_CARD"
# An unknown or expired certify_id (not certified within its ~23 hours): the attempt is over.
UNKNOWN_CERTIFY_ID = "OPEN_CERTIFY_BILL_NOT_EXIST"
# Worth trying again later: Alipay busy or unreachable, or an answer that was not Alipay's to read.
TRANSIENT = frozenset({"transport", "bad_response", "20000"})
_OUTER_ORDER_NO = re.compile(r"^[A-Za-z0-9]{1,32}$")


def _error(exc: AlipayAPIError) -> FaceError:
    code = f"alipay_{exc.code}" + (f"_{exc.sub_code}" if exc.sub_code else "")
    return FaceError(code, exc.sub_msg or exc.msg, retryable=exc.code in TRANSIENT)


class AlipayCertify:
    """``initialize`` → the signed ``certify`` page URL; ``query`` for the result."""

    name = "alipay"

    def __init__(self, api: AlipayAPI, *, name: str = "alipay") -> None:
        self._api = api
        self.name = name  # "alipaymini" when run for the Alipay mini program's users with its app id

    async def start(self, request: StartRequest) -> Started:
        """Register the subject (``outer_order_no`` = our reference); the page URL and the ``certify_id``."""
        if not _OUTER_ORDER_NO.match(request.reference):
            raise FaceError("alipay_bad_reference", "outer_order_no must be 1-32 letters or digits", retryable=False)
        identity = OpenCertifyIdentityParam()
        identity.identity_type = IDENTITY_TYPE
        identity.cert_type = CERT_TYPE
        identity.cert_name = request.subject.name
        identity.cert_no = request.subject.id_number
        merchant = OpenCertifyMerchantConfig()
        merchant.return_url = request.return_url
        model = AlipayUserCertifyOpenInitializeModel()
        model.outer_order_no = request.reference
        model.biz_code = BIZ_CODE
        model.identity_param = identity
        model.merchant_config = merchant
        initialize = AlipayUserCertifyOpenInitializeRequest()
        initialize.biz_content = model
        try:
            answer = await self._api.execute(initialize)
        except AlipayAPIError as exc:
            raise _error(exc) from exc
        certify_id = answer.get("certify_id")
        if not isinstance(certify_id, str) or not certify_id:
            raise FaceError("alipay_bad_response", "initialize answered without certify_id", retryable=True)
        page = AlipayUserCertifyOpenCertifyRequest()
        page_model = AlipayUserCertifyOpenCertifyModel()
        page_model.certify_id = certify_id
        page.biz_content = page_model
        return Started(url=self._api.page_url(page), provider_ref=certify_id)

    async def query(self, provider_ref: str, request: StartRequest) -> Outcome:
        """``query``: passed only for ``passed == "T"`` in a response whose signature verified."""
        model = AlipayUserCertifyOpenQueryModel()
        model.certify_id = provider_ref
        query = AlipayUserCertifyOpenQueryRequest()
        query.biz_content = model
        try:
            answer = await self._api.execute(query)
        except AlipayAPIError as exc:
            if exc.code == "40004" and exc.sub_code == UNKNOWN_CERTIFY_ID:
                return Outcome(False, reason="expired")
            raise _error(exc) from exc
        passed = answer.get("passed")
        if passed == "T":
            return Outcome(True)
        if passed == "F":
            return Outcome(False, reason="alipay_not_passed")
        return Outcome(False, reason="alipay_bad_passed")
