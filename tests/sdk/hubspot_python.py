"""HubSpot's official Python SDK (hubspot-api-client) against the emulator.

Run by tests/official_sdks.rs: argv = base URL, private-app token, client id, client secret,
refresh token. Exits non-zero, with the reason, when any call fails or answers unexpectedly.
"""

import sys

from hubspot import HubSpot
from hubspot.crm.associations.v4 import ApiException as AssociationsError  # noqa: F401
from hubspot.crm.contacts import (
    ApiException,
    BatchInputSimplePublicObjectBatchInput,
    BatchReadInputSimplePublicObjectId,
    Filter,
    FilterGroup,
    PublicObjectSearchRequest,
    SimplePublicObjectBatchInput,
    SimplePublicObjectId,
    SimplePublicObjectInputForCreate,
)


def check(condition, what):
    if not condition:
        raise SystemExit(f"SDK check failed: {what}")


def main():
    base, token, client_id, client_secret, refresh_token = sys.argv[1:6]
    client = HubSpot(access_token=token, host=base)
    contacts = client.crm.contacts

    page = contacts.basic_api.get_page(limit=10, properties=["email", "lifecyclestage"])
    check(len(page.results) == 10, "a page of 10 contacts")
    check(page.paging.next.after, "a cursor to the next page")
    second = contacts.basic_api.get_page(limit=10, after=page.paging.next.after)
    check(second.results[0].id != page.results[0].id, "the next page moves on")
    first = page.results[0]
    check(first.created_at is not None and first.updated_at is not None, "timestamps parse")

    one = contacts.basic_api.get_by_id(first.id, properties=["email"])
    check(one.id == first.id, "read by id")

    batch = contacts.batch_api.read(
        BatchReadInputSimplePublicObjectId(
            inputs=[SimplePublicObjectId(id=record.id) for record in page.results[:3]],
            properties=["email"],
        )
    )
    check(len(batch.results) == 3, "batch read of three")

    found = contacts.search_api.do_search(
        PublicObjectSearchRequest(
            filter_groups=[
                FilterGroup(
                    filters=[Filter(property_name="lifecyclestage", operator="EQ", value="customer")]
                )
            ],
            properties=["lifecyclestage"],
            limit=5,
        )
    )
    check(found.total > 0 and len(found.results) <= 5, "search by lifecycle stage")
    check(
        all(r.properties["lifecyclestage"] == "customer" for r in found.results),
        "search results match the filter",
    )

    created = contacts.basic_api.create(
        SimplePublicObjectInputForCreate(
            properties={"email": "sdk.check@crmsync.example", "firstname": "Sdk", "lifecyclestage": "lead"}
        )
    )
    check(created.id and created.properties["email"] == "sdk.check@crmsync.example", "create")
    updated = contacts.batch_api.update(
        BatchInputSimplePublicObjectBatchInput(
            inputs=[SimplePublicObjectBatchInput(id=created.id, properties={"lifecyclestage": "customer"})]
        )
    )
    check(updated.status == "COMPLETE", "batch update completes")
    try:
        contacts.batch_api.update(
            BatchInputSimplePublicObjectBatchInput(
                inputs=[SimplePublicObjectBatchInput(id=created.id, properties={"lifecyclestage": "wizard"})]
            )
        )
        check(False, "an invalid option is refused")
    except ApiException as refused:
        check(refused.status == 400, f"400 for an invalid option, got {refused.status}")

    properties = client.crm.properties.core_api.get_all("contacts")
    names = {prop.name for prop in properties.results}
    check({"email", "lifecyclestage", "hs_lead_status"} <= names, "the contact properties")
    pipelines = client.crm.pipelines.pipelines_api.get_all("deals")
    check(any(p.id == "default" for p in pipelines.results), "the default deal pipeline")
    owners = client.crm.owners.owners_api.get_page()
    check(len(owners.results) > 0, "owners")

    companies = client.crm.associations.v4.basic_api.get_page("contacts", first.id, "companies")
    check(companies.results is not None, "v4 associations answer")

    tokens = client.oauth.tokens_api.create(
        grant_type="refresh_token",
        client_id=client_id,
        client_secret=client_secret,
        refresh_token=refresh_token,
    )
    check(tokens.access_token and tokens.expires_in > 0, "OAuth refresh")
    with_oauth = HubSpot(access_token=tokens.access_token, host=base)
    check(len(with_oauth.crm.contacts.basic_api.get_page(limit=1).results) == 1, "OAuth token works")
    print("hubspot-api-client: every call answered as the SDK expects")


if __name__ == "__main__":
    main()
