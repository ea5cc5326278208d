"""Local fake CRM servers implementing reference/crm-contracts.md §6 for the tests."""
