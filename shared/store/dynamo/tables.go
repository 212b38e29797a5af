package dynamo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/certfleet/certfleet/shared/store"
)

// tableWait bounds how long CreateTables waits for a table to become active
// when ctx has no earlier deadline.
const tableWait = 5 * time.Minute

// CreateTables creates the tables of specs (physical name prefix+name) in the
// layout the store uses, on-demand billed, waits until they and their
// indexes are ACTIVE, and enables TTL on attribute "ttl" where it is not
// enabled yet. Tables that already exist are left as they are otherwise, but
// an existing table that lacks a declared index, or has TTL on another
// attribute, is an error.
func CreateTables(ctx context.Context, client *dynamodb.Client, prefix string, specs []store.TableSpec) error {
	ctx, cancel := context.WithTimeout(ctx, tableWait)
	defer cancel()
	for _, spec := range specs {
		if spec.Name == "" {
			return fmt.Errorf("dynamo: create tables: %w: empty table name", store.ErrInvalid)
		}
		_, err := client.CreateTable(ctx, tableInput(prefix, spec))
		var inUse *types.ResourceInUseException
		if err != nil && !errors.As(err, &inUse) {
			return fmt.Errorf("dynamo: create table %s%s: %w", prefix, spec.Name, err)
		}
	}
	for _, spec := range specs {
		if err := waitActive(ctx, client, prefix, spec); err != nil {
			return err
		}
		if err := enableTTL(ctx, client, prefix+spec.Name); err != nil {
			return err
		}
	}
	return nil
}

// enableTTL turns on TTL on attribute "ttl" of an active table unless it
// is on (or being turned on) already; DynamoDB refuses a second
// UpdateTimeToLive within an hour of the first.
func enableTTL(ctx context.Context, client *dynamodb.Client, name string) error {
	out, err := client.DescribeTimeToLive(ctx, &dynamodb.DescribeTimeToLiveInput{TableName: aws.String(name)})
	if err != nil {
		return fmt.Errorf("dynamo: describe time to live of %s: %w", name, err)
	}
	var status types.TimeToLiveStatus
	var attr string
	if d := out.TimeToLiveDescription; d != nil {
		status, attr = d.TimeToLiveStatus, aws.ToString(d.AttributeName)
	}
	switch status {
	case types.TimeToLiveStatusEnabled, types.TimeToLiveStatusEnabling:
		if attr != attrTTL {
			return fmt.Errorf("dynamo: table %s has TTL on attribute %q, not %q; change it (the store writes expiries to %q)", name, attr, attrTTL, attrTTL)
		}
		return nil
	case types.TimeToLiveStatusDisabling:
		return fmt.Errorf("dynamo: table %s is disabling TTL; enable it on attribute %q once that is done", name, attrTTL)
	}
	_, err = client.UpdateTimeToLive(ctx, &dynamodb.UpdateTimeToLiveInput{
		TableName:               aws.String(name),
		TimeToLiveSpecification: &types.TimeToLiveSpecification{AttributeName: aws.String(attrTTL), Enabled: aws.Bool(true)},
	})
	if err != nil {
		return fmt.Errorf("dynamo: enable time to live on %s: %w", name, err)
	}
	return nil
}

func tableInput(prefix string, spec store.TableSpec) *dynamodb.CreateTableInput {
	str := func(name string) types.AttributeDefinition {
		return types.AttributeDefinition{AttributeName: aws.String(name), AttributeType: types.ScalarAttributeTypeS}
	}
	schema := func(pk, sk string) []types.KeySchemaElement {
		return []types.KeySchemaElement{
			{AttributeName: aws.String(pk), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String(sk), KeyType: types.KeyTypeRange},
		}
	}
	in := &dynamodb.CreateTableInput{
		TableName:            aws.String(prefix + spec.Name),
		BillingMode:          types.BillingModePayPerRequest,
		AttributeDefinitions: []types.AttributeDefinition{str(attrPK), str(attrSK)},
		KeySchema:            schema(attrPK, attrSK),
	}
	for _, idx := range spec.Indexes {
		pk, sk := IndexAttrs(idx)
		in.AttributeDefinitions = append(in.AttributeDefinitions, str(pk), str(sk))
		in.GlobalSecondaryIndexes = append(in.GlobalSecondaryIndexes, types.GlobalSecondaryIndex{
			IndexName:  aws.String(idx),
			KeySchema:  schema(pk, sk),
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		})
	}
	return in
}

// waitActive polls DescribeTable until the table and all its indexes are
// ACTIVE, then checks that the declared indexes exist.
func waitActive(ctx context.Context, client *dynamodb.Client, prefix string, spec store.TableSpec) error {
	name := prefix + spec.Name
	delay := 100 * time.Millisecond
	for {
		out, err := client.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(name)})
		var notFound *types.ResourceNotFoundException
		if err != nil && !errors.As(err, &notFound) { // not yet visible is worth waiting for
			return fmt.Errorf("dynamo: describe table %s: %w", name, err)
		}
		if err == nil && out.Table != nil && active(out.Table) {
			have := map[string]bool{}
			for _, g := range out.Table.GlobalSecondaryIndexes {
				have[aws.ToString(g.IndexName)] = true
			}
			for _, idx := range spec.Indexes {
				if !have[idx] {
					return fmt.Errorf("dynamo: table %s exists without index %q; add it or recreate the table", name, idx)
				}
			}
			return nil
		}
		if err := sleep(ctx, delay); err != nil {
			return fmt.Errorf("dynamo: waiting for table %s: %w", name, err)
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func active(t *types.TableDescription) bool {
	if t.TableStatus != types.TableStatusActive {
		return false
	}
	for _, g := range t.GlobalSecondaryIndexes {
		if g.IndexStatus != types.IndexStatusActive {
			return false
		}
	}
	return true
}
