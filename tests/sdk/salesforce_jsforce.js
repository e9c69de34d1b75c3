// jsforce (the Salesforce client for Node) against the emulator.
//
// Run by tests/official_sdks.rs: argv = login URL, client id, client secret, username,
// private key file, refresh token. Exits non-zero, with the reason, when any call fails or
// answers unexpectedly. Signs its own JWT bearer assertion with Node's crypto.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const jsforce = require('jsforce');

function check(condition, what) {
  if (!condition) {
    throw new Error(`SDK check failed: ${what}`);
  }
}

function assertion(clientId, username, keyFile) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const header = encode({ alg: 'RS256' });
  const claims = encode({
    iss: clientId,
    sub: username,
    aud: 'https://login.salesforce.com',
    exp: Math.floor(Date.now() / 1000) + 180,
  });
  const signature = crypto
    .sign('RSA-SHA256', Buffer.from(`${header}.${claims}`), fs.readFileSync(keyFile, 'utf8'))
    .toString('base64url');
  return `${header}.${claims}.${signature}`;
}

async function main() {
  const [loginUrl, clientId, clientSecret, username, keyFile, refreshToken] = process.argv.slice(2);
  const version = '62.0';

  // JWT bearer login through jsforce's own OAuth2 client.
  const jwt = new jsforce.Connection({ loginUrl, version, oauth2: { clientId, loginUrl } });
  const authorized = await jwt.authorize({
    grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer',
    assertion: assertion(clientId, username, keyFile),
  });
  check(authorized.organizationId && authorized.id, 'JWT login names the org and user');
  check(jwt.instanceUrl === loginUrl, 'the instance URL');

  // Refresh-token login: jsforce refreshes by itself when it has no access token yet.
  const conn = new jsforce.Connection({
    oauth2: { clientId, clientSecret, loginUrl },
    instanceUrl: loginUrl,
    refreshToken,
    version,
  });
  let refreshed = false;
  conn.on('refresh', () => {
    refreshed = true;
  });
  const leads = await conn.query('SELECT Id, Email, Status, Owner.Email FROM Lead ORDER BY Id LIMIT 5');
  check(refreshed, 'jsforce refreshed its session');
  check(leads.totalSize === 5 && leads.records.length === 5, 'a query of five leads');
  check(leads.records[0].Owner && leads.records[0].Owner.Email, 'relationship fields');

  // Paging through nextRecordsUrl: all leads with autoFetch.
  const count = await conn.query('SELECT COUNT() FROM Lead');
  const all = await conn
    .query('SELECT Id FROM Lead')
    .run({ autoFetch: true, maxFetch: 100000, headers: { 'Sforce-Query-Options': 'batchSize=200' } });
  check(
    all.totalSize === count.totalSize && all.records.length === count.totalSize,
    `autoFetch pages through every lead (${all.records.length} of ${count.totalSize})`,
  );

  const describe = await conn.sobject('Lead').describe();
  const status = describe.fields.find((field) => field.name === 'Status');
  check(status && status.picklistValues.length >= 4, 'Lead.Status picklist');

  // sObject Collections through jsforce's create/update/upsert/destroy.
  const created = await conn.sobject('Lead').create([
    { LastName: "O'Brien", Company: 'Acme', Email: 'obrien.sdk@acme.example' },
    { LastName: 'Ng', Company: 'Hooli', Email: 'ng.sdk@hooli.example' },
  ]);
  check(created.every((result) => result.success), 'collections create');
  const ids = created.map((result) => result.id);
  const updated = await conn.sobject('Lead').update(ids.map((Id) => ({ Id, Title: 'Buyer' })));
  check(updated.every((result) => result.success), `collections update: ${JSON.stringify(updated)}`);
  // A single-record update that Salesforce refuses surfaces as an error with its code.
  let refusal = null;
  try {
    await conn.sobject('Lead').update({ Id: ids[0], Status: 'Nope' });
  } catch (error) {
    refusal = error;
  }
  check(refusal && refusal.errorCode === 'INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST', 'restricted picklist refused');
  const upserted = await conn
    .sobject('Lead')
    .upsert({ HubSpot_Contact_Id__c: 'sdk-1', LastName: 'Okafor', Company: 'Initech' }, 'HubSpot_Contact_Id__c');
  check(upserted.success && upserted.created, 'upsert by external id creates');
  const retrieved = await conn.sobject('Lead').retrieve(ids);
  check(retrieved.length === 2 && retrieved[0].Title === 'Buyer', 'retrieve');
  const destroyed = await conn.sobject('Lead').destroy(ids);
  check(destroyed.every((result) => result.success), 'collections delete');

  const limits = await conn.limits();
  check(limits.DailyApiRequests.Max > 0, 'limits');
  check(conn.limitInfo && conn.limitInfo.apiUsage && conn.limitInfo.apiUsage.used > 0, 'Sforce-Limit-Info read');

  const start = new Date(Date.now() - 60 * 60 * 1000);
  const end = new Date(Date.now() + 60 * 1000);
  const changed = await conn.sobject('Lead').updated(start, end);
  check(changed.ids.length >= 1, 'updated feed');
  const removed = await conn.sobject('Lead').deleted(start, end);
  check(removed.deletedRecords.length === 2, 'deleted feed');

  // Bulk API 2.0 query: job, polling, CSV result sets.
  const bulk = await conn.bulk2.query('SELECT Id, Email FROM Lead');
  const rows = [];
  for await (const row of bulk) {
    rows.push(row);
  }
  // Every live lead: those counted before, plus the upserted one (the two created are deleted).
  check(rows.length === count.totalSize + 1, `bulk query returns every live lead (${rows.length})`);

  console.log('jsforce: every call answered as the client expects');
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exit(1);
});
